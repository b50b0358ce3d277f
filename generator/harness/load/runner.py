"""`bulwark loadtest`: run scenarios on both sides, print the table, write the JSON.

Per scenario both servers are up at once on the server core and wrk (on its own core) drives
them in turn: a discarded warm-up each, then the measured runs of the same length, alternating
baseline and service so the machine's drift falls on both alike (scenario.py). This module
knows no scenario by name: it checks, measures, judges and reports whatever it is given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from generator.harness import machine, nginx, project, wrk
from generator.harness.load.scenario import (
    MAX_ERROR_SHARE,
    RUNS,
    WARMUP_S,
    Bench,
    Outcome,
    Scenario,
    Side,
    pairs,
)
from generator.harness.load.scenarios import SCENARIOS
from generator.harness.machine import UsageError
from generator.harness.servers import SERVER_CPU


def run_loadtest(
    dest: Path,
    scenarios: Sequence[str],
    *,
    duration: float,
    connections: int,
    json_path: Path | None,
    min_ratio: float | None,
    console: Console,
    run_all: bool = False,
    report_dir: Path | None = None,
    command: str = "",
    repeat: int | None = None,
    no_rate_limit: bool = False,
) -> int:
    """Measure each scenario on both sides; exit 0, 1 (a failed scenario, or a ratio below
    min_ratio) or 2 (usage).

    `run_all` runs every scenario DEST can run and notes the others; `report_dir` receives
    report.json, report.png and index.html (report.py), which quote `command`. `repeat` sets
    every scenario's measured runs per side; `no_rate_limit` turns the service's default
    per-client limit off (wrk is one client). An interrupt stops every server before
    returning 130.
    """
    try:
        if run_all and scenarios:
            raise UsageError("--all runs every scenario; drop --scenario")
        names = list(SCENARIOS) if run_all else list(dict.fromkeys(scenarios))
        loaded, seconds = check_usage(dest, names, duration, connections, repeat)
        runnable, skipped = runnable_scenarios(loaded, names)
        if skipped and not run_all:
            raise UsageError(next(iter(skipped.values())))
    except UsageError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    for name, reason in skipped.items():
        console.print(f"[yellow]skipped[/] {name}: {escape(reason)}")
    chosen = [SCENARIOS[name] for name in runnable]
    try:
        found, outcomes = measure(
            loaded, chosen, seconds, connections, console, repeat, no_rate_limit
        )
    except (project.ServiceError, wrk.WrkError, nginx.NginxError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: every server was stopped")
        return 130
    console.print(table(outcomes, min_ratio))
    for outcome in outcomes:
        if outcome.failure is not None:
            console.print(f"[red]{outcome.scenario.name} failed:[/] {escape(outcome.failure)}")
        elif outcome.extra:
            figures = ", ".join(
                f"{key} {value}"
                for key, value in outcome.extra.items()
                if not isinstance(value, list)  # series and rows: the plot's and tables'
            )
            if figures:
                console.print(f"{outcome.scenario.name}: {escape(figures)}")
        for title, rows in outcome.scenario.tables(scenario_report(outcome)).items():
            console.print(own_table(f"{outcome.scenario.name}: {title}", rows))
    runs = repeat or RUNS
    more = "".join(
        f" ({o.scenario.name}: {o.scenario.runs})"
        for o in outcomes
        if repeat is None and o.scenario.runs != RUNS
    )
    console.print(
        f"wrk -c{connections} on CPU {machine.WRK_CPU}, servers on CPU {SERVER_CPU}: "
        f"median of {runs}{more} x {seconds} s runs after {WARMUP_S} s of warm-up, "
        "p50/p99 from that run; rps and latency count expected answers only; CPU is the "
        "server's process tree; pair ratios as median (min-max)"
    )
    document = json_document(found, outcomes, seconds, connections, repeat, no_rate_limit)
    if skipped:
        document["skipped"] = [{"name": name, "reason": why} for name, why in skipped.items()]
    if command:
        document["command"] = command
    written = [json_path] if json_path is not None else []
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if report_dir is not None:
        from generator.harness.load.report import write_report  # matplotlib loads only here

        written += write_report(document, report_dir)
    for path in written:
        console.print(f"wrote {escape(str(path))}")
    failed = [o.scenario.name for o in outcomes if o.failure is not None]
    if failed:
        console.print(f"[red]failed, no ratio:[/] {', '.join(failed)}")
    below = [o for o in outcomes if _below(o, min_ratio)]
    if below:
        shown = ", ".join(f"{o.scenario.name} ({o.ratio:.2f})" for o in below)
        console.print(f"[red]below --min-ratio {min_ratio}:[/] {shown}")
    return 1 if failed or below else 0


def check_usage(
    dest: Path,
    names: Sequence[str],
    duration: float,
    connections: int,
    repeat: int | None = None,
) -> tuple[project.Project, int]:
    """Everything checkable before a server starts; returns the project and wrk's seconds."""
    if not names:
        raise UsageError(f"name at least one scenario: {', '.join(SCENARIOS)}")
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise UsageError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    seconds = round(duration)  # wrk counts whole seconds
    if seconds < 1:
        raise UsageError(f"duration must be at least 1 s, got {duration}")
    if connections < 1:
        raise UsageError(f"connections must be at least 1, got {connections}")
    if repeat is not None and repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {repeat}")
    loaded = machine.load_project(dest)
    machine.check_environment(loaded)
    return loaded, seconds


def runnable_scenarios(
    loaded: project.Project, names: Sequence[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Split `names` (default: every scenario) into those the project and this machine can
    run and the others, each with the reason (what to install or render it with)."""
    runnable, unavailable = [], {}
    for name in dict.fromkeys(names if names is not None else SCENARIOS):
        reason = SCENARIOS[name].unavailable(loaded)
        if reason is None:
            runnable.append(name)
        else:
            unavailable[name] = reason
    return runnable, unavailable


def measure(
    loaded: project.Project,
    scenarios: Sequence[Scenario],
    seconds: int,
    connections: int,
    console: Console,
    repeat: int | None = None,
    no_rate_limit: bool = False,
) -> tuple[dict[str, Any], list[Outcome]]:
    """The machine's description and each scenario's outcome, judged."""
    machine.ensure_environment(loaded, console)
    with ExitStack() as stack:
        with console.status("reading versions; starting and migrating the database if any"):
            found = machine.info(loaded)
            env = stack.enter_context(project.database(loaded))
        console.print(machine.line(found))
        stack.enter_context(machine.on_wrk_core())
        progress = stack.enter_context(
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[figure]}"),
                console=console,
            )
        )
        bench = Bench(loaded, env, seconds, connections, progress, repeat, no_rate_limit)
        outcomes = []
        for scenario in scenarios:
            outcome = scenario.measure(bench)
            failure = scenario.failure(outcome, bench)
            if failure is None:
                extra = outcome.extra | scenario.figures(outcome.baseline, outcome.service)
                outcome = replace(outcome, extra=extra)
            outcomes.append(replace(outcome, failure=failure))
    return found, outcomes


def _below(outcome: Outcome, min_ratio: float | None) -> bool:
    return min_ratio is not None and outcome.ratio is not None and outcome.ratio < min_ratio


def table(outcomes: Sequence[Outcome], min_ratio: float | None) -> Table:
    """Per scenario and side: rps, latency and CPU per request; per scenario, the ratios."""
    shown = Table()
    shown.add_column("scenario")
    shown.add_column("side")
    for name in ("rps", "p50 ms", "p99 ms", "CPU µs/req", "unexpected", "ratio", "pairs"):
        shown.add_column(name, justify="right")
    for outcome in outcomes:
        spread = pairs(outcome.baseline, outcome.service) if outcome.failure is None else {}
        for side, measured in (("baseline", outcome.baseline), ("service", outcome.service)):
            run = measured.median
            ratio, pair = "", ""
            if side == "service":
                if outcome.ratio is None:
                    ratio = "[red]failed[/]"
                else:
                    colour = "red" if _below(outcome, min_ratio) else "green"
                    ratio = f"[{colour}]{outcome.ratio:.2f}[/]"
                pair = "\n".join(
                    f"{key} {s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"
                    for key, s in spread.items()
                )
            unexpected = measured.unexpected
            share = f"{unexpected:,} ({measured.error_share:.2%})" if unexpected else "0"
            too_many = measured.error_share > MAX_ERROR_SHARE
            shown.add_row(
                outcome.scenario.name,
                side,
                f"{run.good_rps:,.0f}",
                f"{run.p50_ms:.2f}",
                f"{run.p99_ms:.2f}",
                "-" if measured.cpu_us is None else f"{measured.cpu_us:,.0f}",
                f"[red]{share}[/]" if too_many else share,
                ratio,
                pair,
            )
    return shown


def own_table(title: str, rows: Sequence[dict[str, str]]) -> Table:
    """A scenario's own table (Scenario.tables), first column left, figures right."""
    shown = Table(title=escape(title), title_justify="left")
    columns = list(rows[0]) if rows else []
    for index, column in enumerate(columns):
        shown.add_column(column, justify="left" if index in (0, len(columns) - 1) else "right")
    for row in rows:
        shown.add_row(*(escape(row[column]) for column in columns))
    return shown


def json_document(
    found: dict[str, Any],
    outcomes: Sequence[Outcome],
    seconds: int,
    connections: int,
    repeat: int | None = None,
    no_rate_limit: bool = False,
) -> dict[str, Any]:
    """The JSON document; fields may be added, never renamed."""
    return {
        "machine": found,
        "protocol": {
            "warmup_s": WARMUP_S,
            "runs": repeat or RUNS,
            "duration_s": seconds,
            "connections": connections,
            **machine.protocol(),
            "figures": "median run by rps, p50/p99 from that run, errors summed over runs; "
            "rps and latency over expected statuses only; pairs: per-pair ratios",
            "max_error_share": MAX_ERROR_SHARE,
            "no_rate_limit": no_rate_limit,
        },
        "scenarios": [scenario_report(outcome) for outcome in outcomes],
    }


def _side_report(side: Side) -> dict[str, Any]:
    return {
        "statuses": {str(status): n for status, n in side.statuses.items()},
        "unexpected": side.unexpected,
        "error_share": round(side.error_share, 6),
        "cpu_us_per_request": None if side.cpu_us is None else round(side.cpu_us, 2),
    }


def scenario_report(outcome: Outcome) -> dict[str, Any]:
    """One scenario's JSON entry: the service's figures, the baseline's prefixed."""
    service, baseline = outcome.service.median, outcome.baseline.median
    ratio = outcome.ratio
    own, bare = _side_report(outcome.service), _side_report(outcome.baseline)
    entry: dict[str, Any] = {
        "name": outcome.scenario.name,
        "rps": round(service.good_rps, 2),
        "p50_ms": round(service.p50_ms, 3),
        "p99_ms": round(service.p99_ms, 3),
        "errors": outcome.service.errors,
        "baseline_rps": round(baseline.good_rps, 2),
        "baseline_p99_ms": round(baseline.p99_ms, 3),
        "ratio": None if ratio is None else round(ratio, 4),
        "baseline_p50_ms": round(baseline.p50_ms, 3),
        "baseline_errors": outcome.baseline.errors,
        "method": outcome.scenario.method,
        "path": outcome.scenario.path,
        "workers": outcome.scenario.workers,
        "via_nginx": outcome.scenario.via_nginx,
        "expected_statuses": list(outcome.scenario.expect),
        **own,
        **{f"baseline_{key}": value for key, value in bare.items()},
    }
    if outcome.failure is not None:
        entry["failed"] = outcome.failure
    else:
        entry["pairs"] = pairs(outcome.baseline, outcome.service)
    return {
        **entry,
        **outcome.extra,
        "runs": {
            "baseline": [_run_report(run) for run in outcome.baseline.runs],
            "service": [_run_report(run) for run in outcome.service.runs],
        },
    }


def _run_report(run: wrk.WrkResult) -> dict[str, Any]:
    return {
        **asdict(run),
        "statuses": {str(status): n for status, n in run.statuses.items()},
        "errors": run.errors,
        "rps": round(run.good_rps, 2),
        "wrk_rps": run.rps,
    }
