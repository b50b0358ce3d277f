"""`bulwark chaos`: break a generated service's dependencies under load and check the figures
issue 8 sets (DESIGN.md §7). The faults themselves are in chaos_scenarios.py.

Real PostgreSQL (the project's embedded one), a real redis-server on loopback, wrk on one core
and the service on the other, as in `bulwark loadtest`. Exit 0 when every target is met, 1 when
one is missed or a run fails, 2 on a usage error, 130 when interrupted.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from generator.harness import chaos_infra, wrk
from generator.harness import service as svc
from generator.harness.chaos_scenarios import (
    DOWN_503_MS,
    SCENARIOS,
    WRK_CPU,
    Context,
    Result,
)
from generator.harness.db_scenarios import seed_item
from generator.harness.loadtest import (
    _UV_INSTALL_HINT,
    UsageError,
    _machine,
    _machine_line,
    load_for_load_test,
)


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
        project = _check_usage(dest, scenarios, outage_s, drain_s, connections)
    except UsageError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    names = list(dict.fromkeys(scenarios))
    try:
        log_dir = None if json_path is None else json_path.with_suffix(".logs")
        machine, results = _run(
            project,
            names,
            console,
            outage_s=outage_s,
            drain_s=drain_s,
            connections=connections,
            latency_target_ms=latency_target_ms,
            log_dir=log_dir,
        )
    except (svc.ServiceError, wrk.WrkError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: every server was stopped")
        return 130
    console.print(_table(results))
    console.print(
        f"wrk -c{connections} on CPU {WRK_CPU}, service (`python -m {project.package_name}`) "
        f"on CPU {svc.SERVER_CPU}; outage {outage_s:g} s, drain delay {drain_s:g} s"
    )
    if json_path is not None:
        report = {
            "machine": machine,
            "protocol": {
                "connections": connections,
                "outage_s": outage_s,
                "drain_s": drain_s,
                "latency_target_ms": latency_target_ms,
                "server_cpu": svc.SERVER_CPU,
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
) -> svc.Project:
    if not scenarios:
        raise UsageError(f"name at least one scenario (or --all): {', '.join(SCENARIOS)}")
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise UsageError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if outage_s <= 0 or drain_s <= 0:
        raise UsageError("--outage and --drain must be positive")
    if connections < 1:
        raise UsageError(f"connections must be at least 1, got {connections}")
    needs_redis = any(SCENARIOS[name].needs_redis for name in scenarios)
    project = load_for_load_test(
        dest, [("redis-server", chaos_infra.REDIS_INSTALL_HINT)] if needs_redis else []
    )
    for name in dict.fromkeys(scenarios):
        scenario = SCENARIOS[name]
        missing = [f for f in scenario.features if f not in project.features]
        if missing:
            raise UsageError(
                f"scenario {name} needs the {', '.join(missing)} feature(s); "
                f"{dest} was generated without them"
            )
        if scenario.embedded_postgres and "DATABASE_URL" in os.environ:
            raise UsageError(
                f"scenario {name} stops the project's embedded PostgreSQL; "
                "unset DATABASE_URL to use it"
            )
    if not project.python.exists() and shutil.which("uv") is None:
        raise UsageError(f"{dest} has no .venv and uv is not found; install it: {_UV_INSTALL_HINT}")
    return project


def _run(
    project: svc.Project,
    names: Sequence[str],
    console: Console,
    *,
    outage_s: float,
    drain_s: float,
    connections: int,
    latency_target_ms: float,
    log_dir: Path | None,
) -> tuple[dict[str, Any], list[Result]]:
    if not project.python.exists():
        with console.status(f"creating {project.root}/.venv with uv sync"):
            svc.create_environment(project)
    results = []
    with ExitStack() as stack:
        with console.status("reading versions; starting and migrating the database if any"):
            machine = _machine(project)
            db_env = stack.enter_context(svc.database(project))
            item_path = None
            if "postgres" in project.features:
                item_path = "/items/{item_id}".format(**seed_item(project, db_env))
        console.print(_machine_line(machine))
        # The harness shares wrk's core; pinned only now, so PostgreSQL keeps the default.
        cpus = tuple(sorted(os.sched_getaffinity(0)))
        stack.callback(os.sched_setaffinity, 0, cpus)
        os.sched_setaffinity(0, {WRK_CPU})
        for name in names:
            scenario = SCENARIOS[name]
            context = Context(
                project=project,
                db_env=db_env,
                item_path=item_path,
                connections=connections,
                outage_s=outage_s,
                drain_s=drain_s,
                latency_target_ms=latency_target_ms,
                cpus=cpus,
                log_dir=log_dir,
            )
            with console.status(f"{name}: {scenario.description}"):
                result = asyncio.run(scenario.run(context))
            mark = "[green]passed[/]" if result.passed else "[red]missed a target[/]"
            console.print(f"{name}: {mark}")
            results.append(result)
    return machine, results


def _table(results: Sequence[Result]) -> Table:
    table = Table(title="bulwark chaos")
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
