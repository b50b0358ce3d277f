"""The `overload` scenario: offered load far past capacity on a slow route (issue 5).

The slow route holds one of POOL_SIZE "connections" for SLOW_S (like a database pool), so
both sides can serve POOL_SIZE / SLOW_S requests a second. The service caps requests in flight
at the same number. wrk's connections each pause DELAY_MS between an answer and their next
request, which offers about CONNECTIONS x 1000 / DELAY_MS requests a second, several times that
capacity, without saturating the server's CPU. Bare FastAPI with the same route is loaded the
same way, to show what happens without shedding (everything queues on the pool). Figures:

- unloaded_p99_ms: the service's p99 on the slow route with fewer connections than its cap;
- admitted_p99_ms / shed_p99_ms: p99 of the 200s and of the 503s under overload, timed per
  request by overload.lua (wrk's own histogram mixes both);
- non_503_errors: socket errors and any status other than 200 and 503, summed over the runs;
- series / baseline_series: the median run of each side cut into INTERVAL_MS buckets by send
  time, each with its shed/admitted/other counts and p50/p99 per class (the report's plot).
Issue 5's targets: shed p99 < 2 ms, admitted p99 <= 2 x unloaded p99, no non-503 errors.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from generator.harness import service as svc
from generator.harness import wrk

HERE = Path(__file__).parent
SCRIPT = HERE / "overload.lua"
SLOW_S = 0.05
POOL_SIZE = 8
MAX_IN_FLIGHT = POOL_SIZE
DELAY_MS = 60
# Buckets of the latency-over-time series: ten or more points per 10 s run.
INTERVAL_MS = 500
# A waiting room small enough that waiters are admitted before their wait runs out: a waiter
# that times out is a slow 503, and shed responses must stay fast.
SHED_MAX_WAITING = 2
SHED_MAX_WAIT_S = 0.025
UNLOADED_CONNECTIONS = MAX_IN_FLIGHT // 2
_MARKER = "BULWARK_OVERLOAD "
_GRACE_S = 30.0


@dataclass(frozen=True, slots=True)
class Interval:
    """One bucket of a run's series: the requests sent in [t_s, t_s + interval); latencies in
    ms, None when no answer of that class came back for the bucket."""

    t_s: float
    shed: int
    admitted: int
    other: int
    shed_p50_ms: float | None
    shed_p99_ms: float | None
    admitted_p50_ms: float | None
    admitted_p99_ms: float | None


@dataclass(frozen=True, slots=True)
class OverloadRun:
    """One wrk run with the overload script: wrk's report plus the per-class figures."""

    result: wrk.WrkResult
    shed: int
    admitted: int
    other: int
    shed_p99_ms: float
    admitted_p99_ms: float
    series: tuple[Interval, ...] = ()

    @property
    def non_503_errors(self) -> int:
        sockets = (
            self.result.connect_errors
            + self.result.read_errors
            + self.result.write_errors
            + self.result.timeout_errors
        )
        return sockets + self.other


def service_env(project: svc.Project) -> dict[str, str]:
    """The settings that size the service's capacity, and the package for overload_app."""
    prefix = f"{project.package_name.upper()}_"
    return {
        "BULWARK_PACKAGE": project.package_name,
        "BULWARK_SLOW_S": str(SLOW_S),
        "BULWARK_SLOW_POOL": str(POOL_SIZE),
        f"{prefix}MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        f"{prefix}SHED_MAX_WAITING": str(SHED_MAX_WAITING),
        f"{prefix}SHED_MAX_WAIT_S": str(SHED_MAX_WAIT_S),
        # Every wrk connection shares one address: a per-client limit would answer 429s.
        f"{prefix}RATE_LIMIT_DEFAULT": "",
    }


def baseline_server(project: svc.Project) -> AbstractContextManager[svc.RunningServer]:
    app_args = ["--app-dir", str(HERE), "overload_baseline_app:app"]
    env = {**os.environ, "BULWARK_SLOW_S": str(SLOW_S), "BULWARK_SLOW_POOL": str(POOL_SIZE)}
    return svc.serve("baseline", app_args, project=project, env=env)


def service_server(
    project: svc.Project, extra_env: Mapping[str, str]
) -> AbstractContextManager[svc.RunningServer]:
    app_args = ["--app-dir", str(HERE), "overload_app:app"]
    env = {**os.environ, **extra_env, project.environment_var: "prod", **service_env(project)}
    return svc.serve("service", app_args, project=project, env=env)


def run_overload(url: str, *, duration_s: int, connections: int, cpu: int) -> OverloadRun:
    """wrk with overload.lua, one connection per thread."""
    command = wrk.wrk_command(
        url,
        duration_s=duration_s,
        connections=connections,
        cpu=cpu,
        threads=connections,
        script=SCRIPT,
    )
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "BULWARK_OVERLOAD_DELAY_MS": str(DELAY_MS),
                "BULWARK_OVERLOAD_INTERVAL_MS": str(INTERVAL_MS),
            },
            timeout=duration_s + _GRACE_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise wrk.WrkError(f"wrk still running after {duration_s + _GRACE_S:.0f} s") from exc
    if done.returncode != 0:
        raise wrk.WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(_MARKER)), None)
    if line is None:
        raise wrk.WrkError(f"overload.lua printed no figures:\n{done.stdout.strip()}")
    figures = json.loads(line.removeprefix(_MARKER))
    return OverloadRun(
        result=wrk.parse_wrk(done.stdout),
        shed=figures["shed"],
        admitted=figures["admitted"],
        other=figures["other"],
        shed_p99_ms=figures["shed_p99_ms"],
        admitted_p99_ms=figures["admitted_p99_ms"],
        # wrk stops at duration_s: a bucket starting there holds a few stragglers, no figure.
        series=tuple(
            Interval(**bucket) for bucket in figures["series"] if bucket["t_s"] < duration_s
        ),
    )


def median_run(runs: list[OverloadRun]) -> OverloadRun:
    return sorted(runs, key=lambda run: run.result.rps)[len(runs) // 2]


def figures(
    service_runs: list[OverloadRun], unloaded: wrk.WrkResult, baseline_runs: list[OverloadRun]
) -> dict[str, Any]:
    """The scenario's extra JSON fields (issue 5 names the first four)."""
    median = median_run(service_runs)
    baseline_median = median_run(baseline_runs)
    capacity = POOL_SIZE / SLOW_S
    return {
        "shed_p99_ms": round(median.shed_p99_ms, 3),
        "admitted_p99_ms": round(median.admitted_p99_ms, 3),
        "unloaded_p99_ms": round(unloaded.p99_ms, 3),
        "non_503_errors": sum(run.non_503_errors for run in service_runs),
        "capacity_rps": round(capacity, 1),
        "offered_rps": round(median.result.rps, 1),
        "offered_over_capacity": round(median.result.rps / capacity, 2),
        "shed_share": round(median.shed / max(median.shed + median.admitted, 1), 4),
        "baseline_admitted_p99_ms": round(baseline_median.admitted_p99_ms, 3),
        "slow_route_s": SLOW_S,
        "max_in_flight": MAX_IN_FLIGHT,
        "pause_between_requests_ms": DELAY_MS,
        "shed_max_waiting": SHED_MAX_WAITING,
        "shed_max_wait_s": SHED_MAX_WAIT_S,
        "interval_s": INTERVAL_MS / 1000,
        "series": [asdict(bucket) for bucket in median.series],
        "baseline_series": [asdict(bucket) for bucket in baseline_median.series],
    }
