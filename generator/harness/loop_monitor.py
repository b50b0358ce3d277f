"""The `loop-monitor` scenario of `bulwark loadtest` (issue 6): the monitor on against off.

The monitor does no per-request work in production (a heartbeat on the loop 10 times a second
and a watchdog thread), so its cost is well under 1 %, far inside the drift of two separate
runs and inside the whole stack's cost against bare FastAPI. So the baseline side is the
generated service itself with `<PREFIX>LOOP_MONITOR_ENABLED=false`; the service side is the
same service with it on at production settings (prod mode, 100 ms). Both are checked through
`/health/detailed` before any figure is taken, their idle CPU is read over one window with
both up and unloaded, and both are loaded at the same moment (`concurrent_figures`) before the
harness's alternated runs.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rich.progress import Progress

from generator.harness import service as svc
from generator.harness import wrk
from generator.harness.wrk import WrkResult

BASELINE = "service, loop monitor off"
INTERVAL_MS = 100.0
# The difference is tiny, so more pairs than the default RUNS: the median of 7 per-pair ratios.
RUNS = 7
IDLE_WINDOW_S = 20.0
CONCURRENT_WARMUP_S = 3
# Start-up work (imports finishing, the first pool connections) must not land in the window.
_SETTLE_S = 2.0
# Both sides serve /health/detailed to the harness alone, as in production (token, not public).
_TOKEN = secrets.token_hex(16)
SERVICE_SETTINGS = (
    ("LOOP_MONITOR_ENABLED", "true"),
    ("LOOP_MONITOR_INTERVAL_MS", f"{INTERVAL_MS:g}"),
    ("HEALTH_DETAILED_TOKEN", _TOKEN),
)
BASELINE_SETTINGS = (
    ("LOOP_MONITOR_ENABLED", "false"),
    ("HEALTH_DETAILED_TOKEN", _TOKEN),
)


def before_runs(
    servers: Mapping[str, svc.RunningServer],
    *,
    seconds: int,
    connections: int,
    wrk_cpu: int,
    progress: Progress,
) -> dict[str, Any]:
    """The sides checked and their idle CPU (`idle_figures`), then both loaded at once."""
    return idle_figures(servers) | concurrent_figures(
        servers, seconds=seconds, connections=connections, wrk_cpu=wrk_cpu, progress=progress
    )


def idle_figures(
    servers: Mapping[str, svc.RunningServer], *, window_s: float | None = None
) -> dict[str, Any]:
    """Check both sides' monitor through /health/detailed, then their CPU over one idle window
    (IDLE_WINDOW_S unless given; the test suite shortens it).

    Raises ServiceError if the baseline runs a loop monitor or the service does not run one at
    INTERVAL_MS in prod mode: the figures would then compare the wrong things.
    """
    baseline, service = servers["baseline"], servers["service"]
    off, on = detailed(baseline), detailed(service)
    if "loop_monitor" in off["resources"]:
        raise svc.ServiceError("loop-monitor: the baseline side runs a loop monitor")
    monitor = on["resources"].get("loop_monitor")
    if monitor is None:
        raise svc.ServiceError("loop-monitor: the service side runs no loop monitor")
    if monitor["interval_ms"] != INTERVAL_MS or on["environment"] != "prod":
        raise svc.ServiceError(
            f"loop-monitor: the service side runs at {monitor['interval_ms']} ms in "
            f"{on['environment']} mode, not {INTERVAL_MS:g} ms in prod"
        )
    window_s = IDLE_WINDOW_S if window_s is None else window_s
    time.sleep(_SETTLE_S)
    cpu = idle_cpu_percent(
        {"off": baseline.process.pid, "on": service.process.pid}, window_s=window_s
    )
    return {
        "baseline": BASELINE,
        "baseline_loop_monitor": "loop_monitor" in off["resources"],
        "loop_monitor_interval_ms": monitor["interval_ms"],
        "environment": on["environment"],
        # The watchdog is the monitor's own thread: the service side has one more.
        "threads_on": on["process"]["threads"],
        "threads_off": off["process"]["threads"],
        "idle_window_s": window_s,
        "idle_cpu_on_pct": round(cpu["on"], 3),
        "idle_cpu_off_pct": round(cpu["off"], 3),
        "idle_cpu_monitor_pct": round(cpu["on"] - cpu["off"], 3),
    }


def concurrent_figures(
    servers: Mapping[str, svc.RunningServer],
    *,
    seconds: int,
    connections: int,
    wrk_cpu: int,
    progress: Progress,
) -> dict[str, Any]:
    """Both sides loaded in the same moments, one wrk each (both on the wrk core), RUNS times
    after a discarded warm-up.

    Both servers are busy on the one server core and the scheduler gives each an equal share,
    so each one's rps is that share over its CPU per request: whatever slows the machine slows
    both at once, and the ratio of their rps is the monitor's cost alone. On this VM, with
    both sides off (A/A), six such 5 s runs gave ratios of 1.002-1.010 while alternated runs
    of the same servers spread from 0.74 to 1.68. The wrk started first alternates.
    """
    task = progress.add_task(
        f"{'loop-monitor':<12} {'both':<8} at once",
        total=CONCURRENT_WARMUP_S + RUNS * seconds,
        figure="",
    )
    ratios, rps_on, rps_off, errors = [], [], [], 0
    for index in range(RUNS + 1):  # the warm-up first, discarded
        length = CONCURRENT_WARMUP_S if index == 0 else seconds
        order = ("baseline", "service") if index % 2 else ("service", "baseline")
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                side: pool.submit(
                    wrk.run_wrk,
                    servers[side].url("/health"),
                    duration_s=length,
                    connections=connections,
                    cpu=wrk_cpu,
                )
                for side in order
            }
            results = {side: future.result() for side, future in futures.items()}
        for server in servers.values():
            server.check_alive()
        on, off = results["service"], results["baseline"]
        if off.rps <= 0:
            raise svc.ServiceError("loop-monitor: the baseline completed no request at once")
        progress.update(task, advance=length, figure=f"on/off {on.rps / off.rps:.3f}")
        if index > 0:
            ratios.append(on.rps / off.rps)
            rps_on.append(on.rps)
            rps_off.append(off.rps)
            errors += on.errors + off.errors
    return {
        "concurrent_runs": len(ratios),
        "concurrent_rps_on": round(statistics.median(rps_on), 2),
        "concurrent_rps_off": round(statistics.median(rps_off), 2),
        "concurrent_errors": errors,
        "concurrent_ratio_median": round(statistics.median(ratios), 4),
        "concurrent_ratios": [round(ratio, 4) for ratio in ratios],
    }


def detailed(server: svc.RunningServer) -> dict[str, Any]:
    """The server's /health/detailed document, asked with the harness's token."""
    document = svc.fetch_json(
        server, "/health/detailed", headers={"Authorization": f"Bearer {_TOKEN}"}
    )
    if not isinstance(document, dict) or not isinstance(document.get("resources"), dict):
        raise svc.ServiceError(f"{server.name}: /health/detailed has no resources: {document!r}")
    return document


def idle_cpu_percent(pids: Mapping[str, int], *, window_s: float) -> dict[str, float]:
    """CPU of each process (all its threads) over the same window, in percent of one core."""
    start = {name: svc.threads_cpu_s(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(window_s)
    elapsed = time.monotonic() - started
    return {
        name: (svc.threads_cpu_s(pid) - start[name]) / elapsed * 100.0 for name, pid in pids.items()
    }


def run_figures(
    baseline: Sequence[WrkResult],
    service: Sequence[WrkResult],
    cpu_s: Mapping[str, Sequence[float]],
) -> dict[str, Any]:
    """Per-pair figures: each service run against the baseline run just before it, so drift
    between pairs cancels out of each ratio, and their medians.

    Two estimates of the same cost: rps (service / baseline) and CPU per request (baseline /
    service, so both read as "throughput with the monitor on, as a share of off"). A neighbour
    taking part of the server core moves rps far more than it moves CPU per request.
    """
    ratios = pair_ratios(baseline, service)
    off = cpu_us_per_request(baseline, cpu_s["baseline"])
    on = cpu_us_per_request(service, cpu_s["service"])
    cpu_ratios = [b / s for b, s in zip(off, on, strict=True)]
    return {
        "measured_runs": len(ratios),
        "pair_ratio_median": round(statistics.median(ratios), 4),
        "cpu_us_per_request_on": round(statistics.median(on), 2),
        "cpu_us_per_request_off": round(statistics.median(off), 2),
        "cpu_pair_ratio_median": round(statistics.median(cpu_ratios), 4),
        "pair_ratios": [round(ratio, 4) for ratio in ratios],
        "cpu_pair_ratios": [round(ratio, 4) for ratio in cpu_ratios],
    }


def cpu_us_per_request(runs: Sequence[WrkResult], cpu_s: Sequence[float]) -> list[float]:
    """The server's CPU time per answered request of each run, in microseconds."""
    if len(runs) != len(cpu_s):
        raise ValueError(f"{len(runs)} runs but {len(cpu_s)} CPU readings")
    if any(run.requests <= 0 or cpu <= 0 for run, cpu in zip(runs, cpu_s, strict=True)):
        raise svc.ServiceError("loop-monitor: a run answered no request or used no CPU")
    return [cpu / run.requests * 1e6 for run, cpu in zip(runs, cpu_s, strict=True)]


def pair_ratios(baseline: Sequence[WrkResult], service: Sequence[WrkResult]) -> list[float]:
    """service rps / baseline rps of each alternated pair, in run order."""
    if len(baseline) != len(service) or not baseline:
        raise ValueError(f"unpaired runs: {len(baseline)} baseline, {len(service)} service")
    if any(run.rps <= 0 for run in baseline):
        raise svc.ServiceError("loop-monitor: a baseline run completed no request")
    return [s.rps / b.rps for b, s in zip(baseline, service, strict=True)]
