"""The overload scenario's plumbing: its usage rule, the Lua figures, the reported fields."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from test_loadtest import result
from tiny_http import Answer, serving

from generator.harness import wrk
from generator.harness.load import overload
from generator.harness.wrk import WrkError

WRK_REPORT = """\
Running 3s test @ http://127.0.0.1:1/slow
  64 threads and 64 connections
  Latency Distribution
     50%  400.00us
     75%  700.00us
     90%   50.00ms
     99%   60.00ms
  2700 requests in 3.00s, 400.00KB read
  Non-2xx or 3xx responses: 2250
Requests/sec:    900.00
"""


def fake_wrk(monkeypatch: pytest.MonkeyPatch, stdout: str) -> list[list[str]]:
    commands: list[list[str]] = []

    def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        env = kwargs["env"]
        assert isinstance(env, dict)
        assert env["BULWARK_OVERLOAD_DELAY_MS"] == str(overload.DELAY_MS)
        assert env["BULWARK_OVERLOAD_INTERVAL_MS"] == str(overload.INTERVAL_MS)
        # -cN: the Lua script spreads the N connections' first requests over one pause.
        assert env["BULWARK_OVERLOAD_CONNECTIONS"] == command[command.index("wrk") + 2][2:]
        return subprocess.CompletedProcess(command, 0, stdout=stdout, stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    return commands


def test_lua_figures_are_read_with_one_connection_per_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = (
        'BULWARK_OVERLOAD {"shed": 2250, "admitted": 440, "other": 10, '
        '"shed_p99_ms": 1.25, "admitted_p99_ms": 62.5, "series": []}\n'
    )
    commands = fake_wrk(monkeypatch, WRK_REPORT + marker)
    run = overload.run_overload("http://x/slow", duration_s=3, connections=64, cpu=1)
    assert commands[0][commands[0].index("wrk") + 1 :][:2] == ["-t64", "-c64"]
    assert ["-s", str(overload.SCRIPT)] == commands[0][-3:-1]
    assert (run.shed, run.admitted, run.shed_p99_ms, run.admitted_p99_ms) == (2250, 440, 1.25, 62.5)
    assert run.result.rps == 900.0
    assert run.non_503_errors == 10


def test_the_series_is_read_without_the_bucket_past_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def bucket(t_s: float, shed_p99: str) -> str:
        return (
            f'{{"t_s": {t_s}, "shed": 5, "admitted": 2, "other": 0, "shed_p50_ms": 0.5, '
            f'"shed_p99_ms": {shed_p99}, "admitted_p50_ms": 50.1, "admitted_p99_ms": 60.2}}'
        )

    series = ", ".join(bucket(t, p) for t, p in ((0.0, "0.9"), (2.5, "null"), (3.0, "1.1")))
    marker = (
        'BULWARK_OVERLOAD {"shed": 10, "admitted": 4, "other": 0, "shed_p99_ms": 1.0, '
        f'"admitted_p99_ms": 60.2, "series": [{series}]}}\n'
    )
    fake_wrk(monkeypatch, WRK_REPORT + marker)
    run = overload.run_overload("http://x/slow", duration_s=3, connections=64, cpu=1)
    assert [(b.t_s, b.shed_p99_ms) for b in run.series] == [(0.0, 0.9), (2.5, None)]
    assert run.series[0] == overload.Interval(0.0, 5, 2, 0, 0.5, 0.9, 50.1, 60.2)
    assert {"series", "baseline_series", "interval_s"} <= set(
        overload.figures([run], result(80, 52.0), [run])
    )


def test_missing_lua_figures_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_wrk(monkeypatch, WRK_REPORT)
    with pytest.raises(WrkError, match="printed no figures"):
        overload.run_overload("http://x/slow", duration_s=3, connections=64, cpu=1)


def test_reported_fields_come_from_the_median_service_run() -> None:
    def run(rps: float, shed_p99: float, other: int) -> overload.OverloadRun:
        return overload.OverloadRun(result(rps, 60.0), 900, 100, other, shed_p99, 55.0)

    service = [run(800, 9.0, 0), run(900, 1.5, 2), run(1000, 8.0, 1)]
    baseline = [run(140, 0, 0)] * 3
    figures = overload.figures(service, result(80, 52.0), baseline, realtime=True)
    assert figures["realtime"] is True
    assert figures["shed_p99_ms"] == 1.5
    assert figures["admitted_p99_ms"] == 55.0
    assert figures["unloaded_p99_ms"] == 52.0
    assert figures["non_503_errors"] == 3
    assert figures["offered_over_capacity"] == round(
        900 / (overload.POOL_SIZE / overload.SLOW_S), 2
    )


def test_wrk_runs_in_the_realtime_class_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    marker = (
        'BULWARK_OVERLOAD {"shed": 1, "admitted": 1, "other": 0, '
        '"shed_p99_ms": 1.0, "admitted_p99_ms": 60.0, "series": []}\n'
    )
    commands = fake_wrk(monkeypatch, WRK_REPORT + marker)
    overload.run_overload("http://x/slow", duration_s=3, connections=64, cpu=1, realtime=True)
    overload.run_overload("http://x/slow", duration_s=3, connections=64, cpu=1)
    assert commands[0][:3] == ["chrt", "--rr", str(wrk.REALTIME_PRIORITY)]
    assert commands[1][0] == "taskset"


def test_realtime_moves_every_thread_of_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int]] = []

    def record(tid: int, policy: int, param: os.sched_param) -> None:
        calls.append((tid, policy, param.sched_priority))

    monkeypatch.setattr(os, "sched_setscheduler", record)
    tids = {int(task.name) for task in Path(f"/proc/{os.getpid()}/task").iterdir()}
    assert overload.realtime(os.getpid())
    assert {tid for tid, _, _ in calls} == tids
    assert {(policy, priority) for _, policy, priority in calls} == {
        (os.SCHED_RR, wrk.REALTIME_PRIORITY)
    }


def test_realtime_is_false_when_not_permitted(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(tid: int, policy: int, param: os.sched_param) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    assert not overload.realtime(os.getpid())


def first_requests_logged(first: dict[int, float]) -> Answer:
    """Answer 503, noting when each connection's first request came."""

    def answer(handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        first.setdefault(handler.client_address[1], time.monotonic())
        return 503, b"no"

    return answer


@pytest.mark.load
@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")
def test_the_connections_first_requests_are_spread_over_one_pause() -> None:
    """Not all in the same millisecond, as wrk's one pause before every request would send them."""
    first: dict[int, float] = {}
    with serving(first_requests_logged(first)) as port:
        run = overload.run_overload(
            f"http://127.0.0.1:{port}/slow", duration_s=1, connections=4, cpu=1
        )
    assert run.shed > 0
    assert len(first) == 4
    sent = sorted(first.values())
    # Connection k of 4 waits k/4 of the pause: 15 ms apart at a 60 ms pause.
    assert (sent[-1] - sent[0]) * 1000 >= overload.DELAY_MS / 2
