"""`bulwark attack`: hostile clients against a generated service, directly and behind its nginx;
each attack's figures against its targets. The attacks are one module per family (scenarios.py
lists them).

Real sockets on loopback only: the service (`python -m <package>`, prod mode) on CPU 0 with the
project's embedded PostgreSQL, nginx and the attacking harness on CPU 1. Exit 0 when every
target is met, 1 when one is missed or a run fails, 2 on a usage error, 130 when interrupted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from generator.harness import machine, nginx, project, servers
from generator.harness.abuse.scenario import LOOP_BOUNDS_S, Context
from generator.harness.abuse.scenarios import SCENARIOS
from generator.harness.chaos.infra import serve_module
from generator.harness.machine import WRK_CPU, UsageError
from generator.harness.servers import SERVER_CPU
from generator.harness.suite import Result, run_suite, stage


def run_attack(
    dest: Path,
    scenarios: Sequence[str],
    *,
    limit: int,
    p99_factor: float,
    window_s: float,
    json_path: Path | None,
    console: Console,
    loop_bound_s: float = LOOP_BOUNDS_S[0],
) -> int:
    """Run the named attacks (none named: every one DEST allows, the others noted as skipped);
    print figures against targets; write JSON if asked."""
    try:
        loaded, names, skipped = _check_usage(
            dest, scenarios, limit, p99_factor, window_s, loop_bound_s
        )
    except UsageError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    for reason in skipped:
        console.print(f"[yellow]skipped:[/] {escape(reason)}")
    return run_suite(
        lambda log_dir: _run(
            loaded,
            names,
            console,
            limit=limit,
            p99_factor=p99_factor,
            window_s=window_s,
            loop_bound_s=loop_bound_s,
            log_dir=log_dir,
        ),
        errors=(project.ServiceError, nginx.NginxError, OSError),
        title="bulwark attack",
        summary=(
            f"service (`python -m {loaded.package_name}`) on CPU {SERVER_CPU}, nginx and the "
            f"attackers on CPU {WRK_CPU}; limit {limit}/minute, {window_s:g} s per attack phase"
        ),
        about={
            "protocol": {
                "limit_per_minute": limit,
                "p99_factor": p99_factor,
                "window_s": window_s,
                "loop_bound_ms": loop_bound_s * 1000,
                "server_cpu": SERVER_CPU,
                "attacker_cpu": WRK_CPU,
            },
            "skipped": skipped,
        },
        json_path=json_path,
        console=console,
    )


def _settings(name: str, context: Context) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(SCENARIOS[name].settings(context).items()))


def _attack(
    name: str,
    context: Context,
    server: servers.RunningServer,
    settings: dict[str, str],
    console: Console,
) -> Result:
    attack = SCENARIOS[name]
    started = time.monotonic()
    with console.status(f"{name}: {attack.description}"):
        result = asyncio.run(attack.run(context, server))
    took_s = time.monotonic() - started
    result.settings = settings
    result.figures["took_s"] = round(took_s, 1)
    console.print(f"{name}: {result.mark} ({took_s:.1f} s)")
    return result


def _check_usage(
    dest: Path,
    scenarios: Sequence[str],
    limit: int,
    p99_factor: float,
    window_s: float,
    loop_bound_s: float,
) -> tuple[project.Project, list[str], list[str]]:
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise UsageError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if limit < 2:
        raise UsageError(f"--limit must be at least 2 requests a minute, got {limit}")
    if p99_factor < 1 or window_s <= 0:
        raise UsageError("--p99-factor must be at least 1 and --window positive")
    if loop_bound_s not in LOOP_BOUNDS_S:
        bounds = ", ".join(f"{bound * 1000:g}" for bound in LOOP_BOUNDS_S)
        raise UsageError(f"--loop-bound must be one of the loop monitor's buckets: {bounds}")
    if nginx.binary() is None:
        raise UsageError(f"nginx not found; install it with: {nginx.INSTALL_HINT}")
    loaded = machine.load_project(dest)
    if "postgres" not in loaded.features:
        raise UsageError(f"{loaded.root} has no postgres feature: every attack reads its items")
    machine.check_environment(loaded)
    names, skipped = [], []
    for name in dict.fromkeys(scenarios or SCENARIOS):
        reason = SCENARIOS[name].unavailable(loaded)
        if reason is None:
            names.append(name)
        elif scenarios:
            raise UsageError(reason)
        else:
            skipped.append(reason)
    return loaded, names, skipped


def _run(
    loaded: project.Project,
    names: Sequence[str],
    console: Console,
    *,
    limit: int,
    p99_factor: float,
    window_s: float,
    loop_bound_s: float,
    log_dir: Path | None,
) -> tuple[dict[str, Any], list[Result]]:
    results = []
    with stage(loaded, console) as ready:
        assert ready.item_path is not None  # _check_usage refused a project without postgres
        context = Context(
            project=loaded,
            db_env=ready.db_env,
            item_path=ready.item_path,
            limit=limit,
            p99_factor=p99_factor,
            window_s=window_s,
            loop_bound_s=loop_bound_s,
            log_dir=log_dir,
        )
        for settings, group in groupby(names, key=lambda name: _settings(name, context)):
            together = list(group)
            log = context.log("+".join(together))
            with serve_module(loaded, dict(settings), ready.db_env, keep_log=log) as server:
                for name in together:
                    results.append(_attack(name, context, server, dict(settings), console))
                    server.check_alive()
    return ready.machine, results
