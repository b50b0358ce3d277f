"""`bulwark chaos`: break a generated service's dependencies under load and check each fault's
targets. The faults themselves are one module each (scenarios.py lists them).

Real PostgreSQL (the project's embedded one), a real redis-server on loopback, wrk on one core
and the service on the other, as in `bulwark loadtest`. Exit 0 when every target is met, 1 when
one is missed or a run fails, 2 on a usage error, 130 when interrupted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from generator.harness import machine, project, wrk
from generator.harness.chaos.scenario import DOWN_503_MS, Context, Result
from generator.harness.chaos.scenarios import SCENARIOS
from generator.harness.machine import WRK_CPU, UsageError
from generator.harness.servers import SERVER_CPU


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
    try:
        log_dir = None if json_path is None else json_path.with_suffix(".logs")
        found, results = _run(
            loaded,
            names,
            console,
            outage_s=outage_s,
            drain_s=drain_s,
            connections=connections,
            latency_target_ms=latency_target_ms,
            log_dir=log_dir,
        )
    except (project.ServiceError, wrk.WrkError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: every server was stopped")
        return 130
    console.print(results_table(results, "bulwark chaos"))
    console.print(
        f"wrk -c{connections} on CPU {WRK_CPU}, service (`python -m {loaded.package_name}`) "
        f"on CPU {SERVER_CPU}; outage {outage_s:g} s, drain delay {drain_s:g} s"
    )
    if json_path is not None:
        report = {
            "machine": found,
            "protocol": {
                "connections": connections,
                "outage_s": outage_s,
                "drain_s": drain_s,
                "latency_target_ms": latency_target_ms,
                "server_cpu": SERVER_CPU,
                "wrk_cpu": WRK_CPU,
            },
            "scenarios": [result.report() for result in results],
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {escape(str(json_path))}; server output in {escape(str(log_dir))}")
    missed = [result.name for result in results if not result.passed]
    if missed:
        console.print(f"[red]targets missed:[/] {', '.join(missed)}")
        return 1
    return 0


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
    machine.ensure_environment(loaded, console)
    results = []
    with ExitStack() as stack:
        with console.status("reading versions; starting and migrating the database if any"):
            found = machine.info(loaded)
            db_env = stack.enter_context(project.database(loaded))
            item_path = None
            if "postgres" in loaded.features:
                item_path = f"/items/{project.seed_item(loaded, db_env)}"
        console.print(machine.line(found))
        cpus = stack.enter_context(machine.on_wrk_core())
        for name in names:
            fault = SCENARIOS[name]
            context = Context(
                project=loaded,
                db_env=db_env,
                item_path=item_path,
                connections=connections,
                outage_s=outage_s,
                drain_s=drain_s,
                latency_target_ms=latency_target_ms,
                cpus=cpus,
                log_dir=log_dir,
            )
            with console.status(f"{name}: {fault.description}"):
                result = asyncio.run(fault.run(context))
            mark = "[green]passed[/]" if result.passed else "[red]missed a target[/]"
            console.print(f"{name}: {mark}")
            results.append(result)
    return found, results


def results_table(results: Sequence[Result], title: str) -> Table:
    """Each result's checks as rows: figure, measured, target, ok or MISSED."""
    table = Table(title=title)
    table.add_column("scenario")
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    for result in results:
        for index, check in enumerate(result.checks):
            value = f"{check.value:g}" if isinstance(check.value, float) else str(check.value)
            table.add_row(
                result.name if index == 0 else "",
                escape(check.label),
                f"{value} {check.unit}".strip(),
                f"{check.target} {check.unit}".strip(),
                "[green]ok[/]" if check.passed else "[red]MISSED[/]",
            )
        table.add_section()
    return table
