"""The loop-monitor scenario of the load test: the service with its monitor on against
the same service with it off, per-pair ratios and idle CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.progress import Progress
from test_loadtest import (
    HAVE_LOAD_TOOLS,
    load_rendered_sample,
    quiet_console,
    render_sample,
    result,
    write_project,
)

from generator.harness import procfs, servers, wrk
from generator.harness.load import loop_monitor, report, runner
from generator.harness.load.runner import run_loadtest
from generator.harness.load.scenario import RUNS, Bench, Side, cpu_us_per_request, pair_ratios
from generator.harness.load.scenarios import SCENARIOS
from generator.harness.project import Project, ServiceError
from generator.harness.wrk import WrkResult

SCENARIO = loop_monitor.LOOP_MONITOR

# A /proc/PID/stat line whose command name holds a space and a ')': utime 250, stime 50.
STAT = (
    "4242 (uvicorn) worker) S 1 4242 4242 0 -1 4194560 9000 0 0 0 250 50 0 0 20 0 8 0 "
    "123456 300000000 20000 18446744073709551615 1 1 0 0 0 0 0 16781312 17642 0 0 0 17 0 0 0"
)


# --- pure figures ----------------------------------------------------------------------------


def test_stat_cpu_counts_utime_and_stime_after_the_command_name() -> None:
    assert procfs.stat_cpu_s(STAT, ticks_per_s=100) == pytest.approx(3.0)
    assert procfs.stat_cpu_s(STAT, ticks_per_s=50) == pytest.approx(6.0)


def test_process_cpu_includes_every_thread() -> None:
    """CPU burnt in another thread of this process shows in the process's figure."""
    before = procfs.process_cpu_s(os.getpid())
    burn = threading.Thread(target=_burn, args=(0.3,))
    burn.start()
    burn.join()
    spent = procfs.process_cpu_s(os.getpid()) - before
    assert spent >= 0.15  # 0.3 s of CPU asked, read in 10 ms ticks; the main thread slept


def test_threads_cpu_is_exact_and_includes_every_live_thread() -> None:
    burnt, release = threading.Event(), threading.Event()

    def burn_then_wait() -> None:
        _burn(0.3)
        burnt.set()
        release.wait()

    before = procfs.threads_cpu_s(os.getpid())
    thread = threading.Thread(target=burn_then_wait)
    thread.start()
    try:
        assert burnt.wait(30)
        spent = procfs.threads_cpu_s(os.getpid()) - before
    finally:
        release.set()
        thread.join()
    assert 0.3 <= spent < 5.0  # nanoseconds, not ticks: all of the 0.3 s shows


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_idle_cpu_tells_a_busy_process_from_a_sleeping_one() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    asleep = subprocess.Popen(["sleep", "30"])
    try:
        cpu = loop_monitor.idle_cpu_percent({"busy": busy.pid, "asleep": asleep.pid}, window_s=1.0)
    finally:
        for process in (busy, asleep):
            process.kill()
            process.wait()
    assert cpu["asleep"] < 5.0
    assert cpu["busy"] > 20.0  # a whole core unless the machine's other work takes some


def test_pairs_are_each_service_run_over_the_baseline_run_before_it() -> None:
    baseline = [result(1000, 5.0), result(2000, 5.0), result(1000, 5.0)]
    service_runs = [result(990, 5.0), result(1900, 5.0), result(1010, 5.0)]
    assert pair_ratios(baseline, service_runs) == pytest.approx([0.99, 0.95, 1.01])
    # CPU seconds per run: 100 µs a request off; on, 102, 100 and 125 µs (a noisy last run).
    cpu_s = {"baseline": [0.1, 0.2, 0.1], "service": [0.10098, 0.19, 0.12625]}
    figures = SCENARIO.figures(
        Side(tuple(baseline), tuple(cpu_s["baseline"])),
        Side(tuple(service_runs), tuple(cpu_s["service"])),
    )
    # The ratio of the medians would be 1000/1000; the pairs' median is the middle pair's.
    assert figures["measured_runs"] == 3
    assert figures["pair_ratio_median"] == 0.99
    assert figures["pair_ratios"] == [0.99, 0.95, 1.01]
    assert figures["cpu_us_per_request_off"] == 100.0
    assert figures["cpu_us_per_request_on"] == 102.0
    # off / on per pair: reads like the rps ratio (on's throughput as a share of off's).
    assert figures["cpu_pair_ratios"] == pytest.approx([0.9804, 1.0, 0.8], abs=1e-4)
    assert figures["cpu_pair_ratio_median"] == pytest.approx(0.9804, abs=1e-4)


def test_cpu_per_request_needs_one_reading_per_run_and_some_work() -> None:
    assert cpu_us_per_request([result(1000, 5.0)], [0.25]) == [250.0]
    with pytest.raises(ValueError, match="1 runs but 2 CPU readings"):
        cpu_us_per_request([result(1000, 5.0)], [0.1, 0.1])
    with pytest.raises(ServiceError, match="no request or used no CPU"):
        cpu_us_per_request([result(1000, 5.0)], [0.0])


def test_unpaired_or_empty_runs_are_refused() -> None:
    with pytest.raises(ValueError, match="unpaired"):
        pair_ratios([result(1000, 5.0)], [])
    with pytest.raises(ServiceError, match="no request"):
        pair_ratios([result(0, 5.0)], [result(1000, 5.0)])


# --- the scenario ----------------------------------------------------------------------------


def test_the_scenario_measures_the_service_against_itself_with_the_monitor_off() -> None:
    assert SCENARIO.features == ("loop_monitor",)
    assert (SCENARIO.method, SCENARIO.path) == ("GET", "/health")
    assert SCENARIO.runs > RUNS
    service_settings, baseline_settings = (
        dict(SCENARIO.service_settings),
        dict(SCENARIO.baseline_settings or ()),
    )
    assert service_settings["LOOP_MONITOR_ENABLED"] == "true"
    assert service_settings["LOOP_MONITOR_INTERVAL_MS"] == "100"
    assert baseline_settings["LOOP_MONITOR_ENABLED"] == "false"
    # Everything else alike on both sides.
    assert {k: v for k, v in service_settings.items() if not k.startswith("LOOP_MONITOR_")} == {
        k: v for k, v in baseline_settings.items() if not k.startswith("LOOP_MONITOR_")
    }


def test_tree_cpu_counts_the_workers_a_supervisor_started() -> None:
    """A server with workers (uvicorn's supervisor, nginx's master) is costed whole."""
    burn = (
        "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
        "print('burnt', flush=True)\ntime.sleep(30)"
    )
    supervisor = subprocess.Popen(
        ["sh", "-c", '"$0" -c "$1" & wait', sys.executable, burn],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert supervisor.stdout is not None
        assert supervisor.stdout.readline() == b"burnt\n"  # the worker is alive, 0.3 s spent
        alone = procfs.process_cpu_s(supervisor.pid)
        whole = procfs.tree_cpu_s(supervisor.pid)
    finally:
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()
        assert supervisor.stdout is not None
        supervisor.stdout.close()
    assert whole - alone >= 0.15  # read in 10 ms ticks; the shell itself only waited


def test_the_baseline_side_is_the_service_with_the_baseline_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[str, dict[str, str], str]] = []

    def fake_service(
        project: Project, extra_env: Mapping[str, str], *, workers: int, name: str
    ) -> AbstractContextManager[None]:
        started.append(("service", dict(extra_env), name))
        return nullcontext()

    def fake_baseline(*args: object, **kwargs: object) -> AbstractContextManager[None]:
        started.append(("bare", {}, "baseline"))
        return nullcontext()

    monkeypatch.setattr(servers, "service", fake_service)
    monkeypatch.setattr(servers, "baseline", fake_baseline)
    project = Project.load(write_project(tmp_path, features=["loop_monitor"]))
    progress = Progress(console=quiet_console()[0])
    SCENARIO.baseline_server(Bench(project, {"DATABASE_URL": "postgresql://db"}, 1, 1, progress))
    SCENARIOS["health"].baseline_server(Bench(project, {}, 1, 1, progress))
    (kind, env, name), bare = started
    assert (kind, name) == ("service", "baseline")
    assert env["DATABASE_URL"] == "postgresql://db"
    assert env["DEMO_SVC_LOOP_MONITOR_ENABLED"] == "false"
    assert bare[0] == "bare"


def test_all_runs_it_only_with_the_feature(tmp_path: Path) -> None:
    with_it = Project.load(write_project(tmp_path / "a", features=["loop_monitor"]))
    without = Project.load(write_project(tmp_path / "b", features=["metrics"]))
    assert "loop-monitor" in runner.runnable_scenarios(with_it)[0]
    skipped = runner.runnable_scenarios(without)[1]
    assert "needs the loop_monitor feature" in skipped["loop-monitor"]


def test_the_report_judges_it_against_the_monitor_off() -> None:
    entry = {
        "name": "loop-monitor",
        "ratio": 0.90,  # alternated runs: too noisy to judge 2 %
        "concurrent_ratio_median": 0.99,
        "idle_cpu_monitor_pct": 0.1,
    }
    verdict = report.verdict(entry)
    assert verdict.met is True
    assert "monitor off" in verdict.target
    assert "0.98" in verdict.target
    assert "0.25 %" in verdict.target
    assert report.verdict({**entry, "concurrent_ratio_median": 0.97}).met is False
    assert report.verdict({**entry, "idle_cpu_monitor_pct": 0.3}).met is False
    # A document from before the concurrent phase is judged on its ratio.
    assert report.verdict({"name": "loop-monitor", "ratio": 0.99}).met is True
    assert report.verdict({"name": "loop-monitor", "ratio": 0.97}).met is False


def test_both_sides_loaded_at_once_in_alternating_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """One wrk per side in each round, started in turns; the warm-up round is not counted."""
    started: list[str] = []

    def fake_wrk(url: str, *, duration_s: int, connections: int, cpu: int) -> WrkResult:
        side = "service" if url.startswith("http://127.0.0.1:2/") else "baseline"
        started.append(side)
        assert (connections, cpu) == (16, 1)
        if duration_s == loop_monitor.CONCURRENT_WARMUP_S:
            return result(1, 5.0)  # the warm-up: a ratio of 1 that must not count
        return result(990 if side == "service" else 1000, 5.0)

    monkeypatch.setattr(wrk, "run_wrk", fake_wrk)
    alive = subprocess.Popen(["sleep", "30"])
    try:
        running = {
            side: servers.RunningServer(side, port, alive, Path("/dev/null"))
            for side, port in (("baseline", 1), ("service", 2))
        }
        with Progress(console=quiet_console()[0]) as progress:
            figures = loop_monitor.concurrent_figures(
                running, seconds=2, connections=16, wrk_cpu=1, progress=progress
            )
    finally:
        alive.kill()
        alive.wait()
    runs = loop_monitor.RUNS
    assert figures["concurrent_runs"] == runs
    assert figures["concurrent_ratios"] == [0.99] * runs
    assert figures["concurrent_ratio_median"] == 0.99
    assert (figures["concurrent_rps_on"], figures["concurrent_rps_off"]) == (990, 1000)
    assert figures["concurrent_errors"] == 0
    firsts = started[::2]
    assert len(started) == 2 * (runs + 1)
    assert firsts[:3] == ["service", "baseline", "service"]


# --- the check that each side runs what it should --------------------------------------------


def detailed_document(monitor: dict[str, Any] | None, environment: str = "prod") -> dict[str, Any]:
    resources: dict[str, Any] = {"drain": {}}
    if monitor is not None:
        resources["loop_monitor"] = monitor
    return {"environment": environment, "process": {"threads": 3}, "resources": resources}


@contextmanager
def fake_server(name: str, document: dict[str, Any]) -> Iterator[servers.RunningServer]:
    """A sleeping process and an HTTP server that answers /health/detailed to the harness's
    token (as it is now) only."""
    expected = f"Bearer {loop_monitor._TOKEN}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/health/detailed" and self.headers["Authorization"] == expected
            body = json.dumps(document if ok else {"detail": "Not Found"}).encode()
            self.send_response(200 if ok else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer((servers.HOST, 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    process = subprocess.Popen(["sleep", "30"])
    try:
        yield servers.RunningServer(
            name=name, port=httpd.server_address[1], process=process, log=Path("/dev/null")
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        process.kill()
        process.wait()


def idle_figures(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    with fake_server("baseline", off) as baseline, fake_server("service", on) as service_:
        return loop_monitor.idle_figures({"baseline": baseline, "service": service_}, window_s=0.2)


PROD_MONITOR = {"interval_ms": 100.0, "threshold_ms": 100.0}


def test_idle_figures_of_a_correct_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_monitor, "_SETTLE_S", 0.0)
    figures = idle_figures(detailed_document(None), detailed_document(PROD_MONITOR))
    assert figures["baseline"] == "service, loop monitor off"
    assert figures["baseline_loop_monitor"] is False
    assert figures["loop_monitor_interval_ms"] == 100.0
    assert figures["idle_window_s"] == 0.2
    assert figures["idle_cpu_on_pct"] < 50  # both sides are sleeping processes
    assert figures["idle_cpu_off_pct"] < 50
    assert figures["idle_cpu_monitor_pct"] == pytest.approx(
        figures["idle_cpu_on_pct"] - figures["idle_cpu_off_pct"], abs=1e-3
    )


@pytest.mark.parametrize(
    ("off", "on", "message"),
    [
        (detailed_document(PROD_MONITOR), detailed_document(PROD_MONITOR), "baseline side runs"),
        (detailed_document(None), detailed_document(None), "service side runs no loop monitor"),
        (
            detailed_document(None),
            detailed_document({"interval_ms": 10.0}),
            "runs at 10.0 ms in prod mode",
        ),
        (
            detailed_document(None),
            detailed_document(PROD_MONITOR, environment="dev"),
            "in dev mode",
        ),
    ],
)
def test_a_side_running_the_wrong_thing_stops_the_scenario(
    off: dict[str, Any], on: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop_monitor, "_SETTLE_S", 0.0)
    with pytest.raises(ServiceError, match=message):
        idle_figures(off, on)


def test_a_side_refusing_the_token_stops_the_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_server("baseline", detailed_document(None)) as baseline:
        assert "resources" in loop_monitor.detailed(baseline)
        monkeypatch.setattr(loop_monitor, "_TOKEN", "not-the-token-the-server-was-given")
        with pytest.raises(ServiceError, match="baseline: GET /health/detailed failed"):
            loop_monitor.detailed(baseline)


# --- a real run ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def loop_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sample with the loop monitor and no database, from this repo's working tree."""
    if not HAVE_LOAD_TOOLS:
        pytest.skip("needs wrk, taskset and uv")
    return render_sample(tmp_path_factory, "bench-loop", ["loop_monitor"])


@pytest.mark.slow
@pytest.mark.load
def test_loop_monitor_on_a_rendered_sample(
    loop_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """7 pairs of 1 s runs and a 3 s idle window; the floors are tripwires (target 0.98)."""
    monkeypatch.setattr(loop_monitor, "IDLE_WINDOW_S", 3.0)
    printed, document = load_rendered_sample(loop_sample, ["loop-monitor"], 1, tmp_path)
    (entry,) = document["scenarios"]
    assert entry["name"] == "loop-monitor"
    assert entry["baseline"] == "service, loop monitor off"
    assert entry["errors"] == entry["baseline_errors"] == 0, printed
    # What each side ran, read from its own /health/detailed before the load.
    assert entry["baseline_loop_monitor"] is False
    assert entry["loop_monitor_interval_ms"] == 100.0
    assert entry["environment"] == "prod"
    assert entry["threads_on"] > entry["threads_off"], "no watchdog thread on the service side"
    assert entry["idle_window_s"] == 3.0
    assert entry["idle_cpu_on_pct"] >= 0
    assert entry["idle_cpu_off_pct"] >= 0
    assert entry["idle_cpu_monitor_pct"] == pytest.approx(
        entry["idle_cpu_on_pct"] - entry["idle_cpu_off_pct"], abs=2e-3
    )
    runs = SCENARIO.runs
    assert len(entry["runs"]["baseline"]) == len(entry["runs"]["service"]) == runs
    assert entry["measured_runs"] == len(entry["pair_ratios"]) == runs
    assert len(entry["cpu_pair_ratios"]) == runs
    assert 0 < entry["cpu_us_per_request_off"] < 10_000
    assert 0 < entry["cpu_us_per_request_on"] < 10_000
    assert entry["ratio"] >= 0.8, printed
    assert entry["pair_ratio_median"] >= 0.8, printed
    assert entry["cpu_pair_ratio_median"] >= 0.8, printed
    assert entry["concurrent_runs"] == len(entry["concurrent_ratios"]) == runs
    assert entry["concurrent_errors"] == 0, printed
    assert entry["concurrent_rps_on"] > 0
    assert entry["concurrent_rps_off"] > 0
    assert entry["concurrent_ratio_median"] >= 0.8, printed
    assert f"(loop-monitor: {runs})" in printed


@pytest.mark.slow
@pytest.mark.load
def test_a_baseline_with_the_monitor_on_is_caught(
    loop_sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check reads the real service: a baseline left with its monitor on stops the run."""
    monkeypatch.setitem(
        SCENARIOS,
        "loop-monitor",
        replace(SCENARIO, baseline_settings=loop_monitor.SERVICE_SETTINGS),
    )
    console, out = quiet_console()
    code = run_loadtest(
        loop_sample,
        ["loop-monitor"],
        duration=1,
        connections=8,
        json_path=None,
        min_ratio=None,
        console=console,
    )
    assert code == 1
    assert "the baseline side runs a loop monitor" in out.getvalue()
