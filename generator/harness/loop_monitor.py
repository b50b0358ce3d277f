"""The `loop-monitor` scenario of `bulwark loadtest` (issue 6): the monitor on against off.

The monitor does no per-request work in production (a heartbeat on the loop 10 times a second
and a watchdog thread), so its cost is well under 1 %, far inside the drift of two separate
runs and inside the whole stack's cost against bare FastAPI. So the baseline side is the
generated service itself with `<PREFIX>LOOP_MONITOR_ENABLED=false`; the service side is the
same service with it on at production settings (prod mode, 100 ms). Both are checked through
`/health/detailed` before any figure is taken, and their idle CPU is read over one window with
both up and unloaded.
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from generator.harness import service as svc
from generator.harness.wrk import WrkResult

BASELINE = "service, loop monitor off"
INTERVAL_MS = 100.0
# The difference is tiny, so more pairs than the default RUNS: the median of 7 per-pair ratios.
RUNS = 7
IDLE_WINDOW_S = 20.0
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
    start = {name: process_cpu_s(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(window_s)
    elapsed = time.monotonic() - started
    return {
        name: (process_cpu_s(pid) - start[name]) / elapsed * 100.0 for name, pid in pids.items()
    }


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, every thread's included, in seconds."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat").read_text(encoding="ascii"))


def stat_cpu_s(stat: str, ticks_per_s: int | None = None) -> float:
    """utime + stime from the text of /proc/PID/stat, in seconds.

    Parsed by hand: two fields of one kernel line, read twice per scenario, need no library.
    The command name (field 2) is in parentheses and may hold spaces or ')', so the fields are
    counted after the last ')'; there utime and stime (fields 14, 15) are the 12th and 13th.
    """
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / (ticks_per_s or os.sysconf("SC_CLK_TCK"))


def run_figures(baseline: Sequence[WrkResult], service: Sequence[WrkResult]) -> dict[str, Any]:
    """The per-pair ratios (each service run over the baseline run just before it) and their
    median: drift between pairs cancels out of each ratio."""
    ratios = pair_ratios(baseline, service)
    return {
        "measured_runs": len(ratios),
        "pair_ratio_median": round(statistics.median(ratios), 4),
        "pair_ratios": [round(ratio, 4) for ratio in ratios],
    }


def pair_ratios(baseline: Sequence[WrkResult], service: Sequence[WrkResult]) -> list[float]:
    """service rps / baseline rps of each alternated pair, in run order."""
    if len(baseline) != len(service) or not baseline:
        raise ValueError(f"unpaired runs: {len(baseline)} baseline, {len(service)} service")
    if any(run.rps <= 0 for run in baseline):
        raise svc.ServiceError("loop-monitor: a baseline run completed no request")
    return [s.rps / b.rps for b, s in zip(baseline, service, strict=True)]
