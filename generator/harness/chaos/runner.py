"""`bulwark chaos`: break a generated service's dependencies under load and check each fault's
targets. The faults themselves are one module each (scenarios.py lists them).

Real PostgreSQL (the project's embedded one), a real redis-server on loopback, wrk on one core
and the service on the other, as in `bulwark loadtest`. Exit 0 when every target is met, 1 when
one is missed or a run fails, 2 on a usage error, 130 when interrupted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from generator.harness import machine, project, wrk
from generator.harness.chaos.scenario import DOWN_503_MS, Context
from generator.harness.chaos.scenarios import SCENARIOS
from generator.harness.machine import WRK_CPU, UsageError
from generator.harness.servers import SERVER_CPU
from generator.harness.suite import Result, run_suite, stage


def run_chaos(
    dest: Path,
    scenarios: Sequence[str],
    *,
    outage_s: float,
    drain_s: float,
    connections: int,
    json_path: Path | None,
    console: Console,
    latency_target_ms: float = DOWN_503_MS,
) -> int:
    """Run each scenario in order; print a table of figures vs targets; write JSON if asked."""
    try:
        loaded = _check_usage(dest, scenarios, outage_s, drain_s, connections)
    except UsageError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    names = list(dict.fromkeys(scenarios))
    return run_suite(
        lambda log_dir: _run(
            loaded,
            names,
            console,
            outage_s=outage_s,
            drain_s=drain_s,
            connections=connections,
            latency_target_ms=latency_target_ms,
            log_dir=log_dir,
        ),
        errors=(project.ServiceError, wrk.WrkError),
        title="bulwark chaos",
        summary=(
            f"wrk -c{connections} on CPU {WRK_CPU}, service (`python -m {loaded.package_name}`) "
            f"on CPU {SERVER_CPU}; outage {outage_s:g} s, drain delay {drain_s:g} s"
        ),
        about={
            "protocol": {
                "connections": connections,
                "outage_s": outage_s,
                "drain_s": drain_s,
                "latency_target_ms": latency_target_ms,
                "server_cpu": SERVER_CPU,
                "wrk_cpu": WRK_CPU,
            }
        },
        json_path=json_path,
        console=console,
    )


def _check_usage(
    dest: Path, scenarios: Sequence[str], outage_s: float, drain_s: float, connections: int
) -> project.Project:
    if not scenarios:
        raise UsageError(f"name at least one scenario (or --all): {', '.join(SCENARIOS)}")
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise UsageError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if outage_s <= 0 or drain_s <= 0:
        raise UsageError("--outage and --drain must be positive")
    if connections < 1:
        raise UsageError(f"connections must be at least 1, got {connections}")
    chosen = [SCENARIOS[name] for name in dict.fromkeys(scenarios)]
    loaded = machine.load_project(dest, [tool for fault in chosen for tool in fault.tools])
    for fault in chosen:
        reason = fault.unavailable(loaded)
        if reason is not None:
            raise UsageError(reason)
    machine.check_environment(loaded)
    return loaded


def _run(
    loaded: project.Project,
    names: Sequence[str],
    console: Console,
    *,
    outage_s: float,
    drain_s: float,
    connections: int,
    latency_target_ms: float,
    log_dir: Path | None,
) -> tuple[dict[str, Any], list[Result]]:
    results = []
    with stage(loaded, console) as ready:
        for name in names:
            fault = SCENARIOS[name]
            context = Context(
                project=loaded,
                db_env=ready.db_env,
                item_path=ready.item_path,
                connections=connections,
                outage_s=outage_s,
                drain_s=drain_s,
                latency_target_ms=latency_target_ms,
                cpus=ready.cpus,
                log_dir=log_dir,
            )
            with console.status(f"{name}: {fault.description}"):
                result = asyncio.run(fault.run(context))
            console.print(f"{name}: {result.mark}")
            results.append(result)
    return ready.machine, results
