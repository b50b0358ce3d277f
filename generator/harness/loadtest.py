"""`bulwark loadtest`: a generated service against bare FastAPI under wrk (DESIGN.md §8).

Per scenario both servers are up at once on core 0 and wrk (core 1) drives them in turn: a
discarded warm-up each, then RUNS measured runs of the same length, alternating baseline and
service so the machine's drift falls on both alike. Only one is under load at any moment.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from generator.harness import loop_monitor, nginx, overload, wrk
from generator.harness import service as svc
from generator.harness.db_scenarios import BASELINE_DB_APP, seed_item

WARMUP_S = 3
RUNS = 3
WRK_CPU = 1
_UV_INSTALL_HINT = "python3 -m pip install uv"
_TASKSET_INSTALL_HINT = "sudo apt-get install -y util-linux"


class BeforeRuns(Protocol):
    """A scenario's own measurements with both servers up, before the alternated runs; its
    figures join the JSON entry (wrk on `wrk_cpu`, progress shown as a task of `progress`)."""

    def __call__(
        self,
        servers: Mapping[str, svc.RunningServer],
        *,
        seconds: int,
        connections: int,
        wrk_cpu: int,
        progress: Progress,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Scenario:
    """One load shape: what wrk requests, on both sides alike."""

    name: str
    method: str
    path: str
    description: str
    # The defaults keep a scenario like `health`: no feature needed, bare FastAPI baseline.
    features: tuple[str, ...] = ()
    baseline_app: Path = svc.BASELINE_APP
    # Run once before both sides (database up and migrated); returns the `{...}` in `path`.
    prepare: Callable[[svc.Project, Mapping[str, str]], Mapping[str, str]] | None = None
    # Service settings for this scenario, by name without the project's env prefix.
    service_settings: tuple[tuple[str, str], ...] = ()
    # uvicorn worker processes on both sides; through the project's nginx site or direct.
    workers: int = 1
    via_nginx: bool = False
    # When set, the baseline side is the generated service itself with these settings (by
    # name without the prefix) instead of `baseline_app`: a feature measured against its absence.
    baseline_settings: tuple[tuple[str, str], ...] | None = None
    # Measured runs per side; a tiny difference needs more pairs than the default.
    runs: int = RUNS
    before_runs: BeforeRuns | None = None
    # Read each server's process CPU (utime + stime) around every run; one worker only.
    cpu_per_run: bool = False
    # From the measured runs, baseline's then service's, and their CPU seconds by side (empty
    # lists unless cpu_per_run): figures for the JSON entry.
    run_figures: (
        Callable[
            [Sequence[wrk.WrkResult], Sequence[wrk.WrkResult], Mapping[str, Sequence[float]]],
            dict[str, Any],
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        if self.method != "GET":
            raise ValueError(f"{self.name}: wrk sends GET only; other methods need a Lua script")
        if self.cpu_per_run and self.workers != 1:
            raise ValueError(f"{self.name}: CPU per run reads one process; workers must be 1")


# Later scenarios (db-read, cached-read, overload, nginx) slot in here.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("health", "GET", "/health", "liveness route: the stack's own cost"),
        Scenario(
            "direct",
            "GET",
            "/health",
            "the nginx scenario's servers (2 workers) without nginx: its direct reference",
            workers=2,
        ),
        Scenario(
            "nginx",
            "GET",
            "/health",
            "through real nginx with the project's own site file, 2 workers on both sides",
            workers=2,
            via_nginx=True,
        ),
        Scenario(
            "db-read",
            "GET",
            "/items/{item_id}",
            "one item by id from PostgreSQL (item cache off) vs bare FastAPI + asyncpg",
            features=("postgres",),
            baseline_app=BASELINE_DB_APP,
            prepare=seed_item,
            service_settings=(("CACHE_ITEMS_TTL_S", "0"),),
        ),
        Scenario(
            "cached-read",
            "GET",
            "/items/{item_id}",
            "one item by id through the cache vs bare FastAPI + asyncpg reading PostgreSQL",
            features=("postgres", "cache"),
            baseline_app=BASELINE_DB_APP,
            prepare=seed_item,
        ),
        Scenario(
            "overload",
            "GET",
            "/slow",
            "offered load many times capacity on a slow route: fast 503s, admitted ones on time",
            features=("load_shedding",),
        ),
        Scenario(
            "loop-monitor",
            "GET",
            "/health",
            "the service with its loop monitor on (prod, 100 ms) vs the same service with it off",
            features=("loop_monitor",),
            service_settings=loop_monitor.SERVICE_SETTINGS,
            baseline_settings=loop_monitor.BASELINE_SETTINGS,
            runs=loop_monitor.RUNS,
            before_runs=loop_monitor.before_runs,
            cpu_per_run=True,
            run_figures=loop_monitor.run_figures,
        ),
    )
}


class UsageError(ValueError):
    """The command cannot run as asked (exit 2); the message says what to change."""


@dataclass(frozen=True, slots=True)
class Side:
    """The measured runs of one server for one scenario."""

    runs: tuple[wrk.WrkResult, ...]

    @property
    def median(self) -> wrk.WrkResult:
        """The run with the median rps; its p50/p99 are reported with it, so each reported
        figure comes from one real run rather than a blend of three."""
        return sorted(self.runs, key=lambda run: run.rps)[len(self.runs) // 2]

    @property
    def errors(self) -> int:
        """Socket errors and non-2xx/3xx responses, summed over the measured runs."""
        return sum(run.errors for run in self.runs)


@dataclass(frozen=True, slots=True)
class Outcome:
    scenario: Scenario
    baseline: Side
    service: Side
    # Scenario-specific figures added to its JSON entry (overload: shed_p99_ms...).
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.service.median.rps / self.baseline.median.rps


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
) -> int:
    """Measure each scenario on both sides; exit 0, 1 (failure or below min_ratio) or 2 (usage).

    `run_all` runs every scenario DEST can run and notes the others; `report_dir` receives
    report.json, report.png and index.html (report.py), which quote `command`.
    An interrupt stops every server before returning 130.
    """
    try:
        if run_all and scenarios:
            raise UsageError("--all runs every scenario; drop --scenario")
        if run_all:
            project, seconds = _check_usage(dest, list(SCENARIOS), duration, connections, skip=True)
            scenarios, skipped = runnable_scenarios(project)
        else:
            project, seconds = _check_usage(dest, scenarios, duration, connections)
            skipped = {}
    except UsageError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    for name, reason in skipped.items():
        console.print(f"[yellow]skipped[/] {name}: {escape(reason)}")
    chosen = [SCENARIOS[name] for name in dict.fromkeys(scenarios)]
    try:
        machine, outcomes = _measure(project, chosen, seconds, connections, console)
    except (svc.ServiceError, wrk.WrkError, nginx.NginxError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: every server was stopped")
        return 130
    console.print(_table(outcomes, min_ratio))
    for outcome in outcomes:
        if outcome.extra:
            figures = ", ".join(
                f"{key} {value}"
                for key, value in outcome.extra.items()
                if not isinstance(value, list)  # the series are for the report's plot
            )
            console.print(f"{outcome.scenario.name}: {escape(figures)}")
    more = "".join(
        f" ({o.scenario.name}: {o.scenario.runs})" for o in outcomes if o.scenario.runs != RUNS
    )
    console.print(
        f"wrk -c{connections} on CPU {WRK_CPU}, servers on CPU {svc.SERVER_CPU}: "
        f"median of {RUNS}{more} x {seconds} s runs after {WARMUP_S} s of warm-up, "
        "p50/p99 from that run, errors summed over the runs"
    )
    report = _report(machine, outcomes, seconds, connections)
    if skipped:
        report["skipped"] = [{"name": name, "reason": reason} for name, reason in skipped.items()]
    if command:
        report["command"] = command
    written = [json_path] if json_path is not None else []
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if report_dir is not None:
        from generator.harness.report import write_report  # matplotlib loads only for a report

        written += write_report(report, report_dir)
    for path in written:
        console.print(f"wrote {escape(str(path))}")
    below = [o for o in outcomes if min_ratio is not None and o.ratio < min_ratio]
    if below:
        names = ", ".join(f"{o.scenario.name} ({o.ratio:.2f})" for o in below)
        console.print(f"[red]below --min-ratio {min_ratio}:[/] {names}")
        return 1
    return 0


def load_for_load_test(dest: Path, extra_tools: Sequence[tuple[str, str]] = ()) -> svc.Project:
    """The rendered project at DEST, once the machine can load it: wrk, taskset and
    `extra_tools` ((name, install hint) pairs) installed, and the two CPUs that pin the server
    and wrk apart available. A `UsageError` names what is missing."""
    tools = [("wrk", wrk.INSTALL_HINT), ("taskset", _TASKSET_INSTALL_HINT), *extra_tools]
    for tool, hint in tools:
        if shutil.which(tool) is None:
            raise UsageError(f"{tool} not found; install it with: {hint}")
    cpus = {svc.SERVER_CPU, WRK_CPU}
    if not cpus <= os.sched_getaffinity(0):
        raise UsageError(f"needs CPUs {sorted(cpus)} to pin the server and wrk apart")
    try:
        return svc.Project.load(dest)
    except svc.NotAProjectError as exc:
        raise UsageError(str(exc)) from exc


def _check_usage(
    dest: Path, scenarios: Sequence[str], duration: float, connections: int, *, skip: bool = False
) -> tuple[svc.Project, int]:
    """Everything checkable before a server starts; returns the project and wrk's seconds.

    With `skip`, a scenario DEST cannot run is left to the caller (runnable_scenarios)."""
    if not scenarios:
        raise UsageError(f"name at least one scenario: {', '.join(SCENARIOS)}")
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise UsageError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    seconds = round(duration)  # wrk counts whole seconds
    if seconds < 1:
        raise UsageError(f"duration must be at least 1 s, got {duration}")
    if connections < 1:
        raise UsageError(f"connections must be at least 1, got {connections}")
    project = load_for_load_test(dest)
    if not skip:
        unavailable = runnable_scenarios(project, scenarios)[1]
        if unavailable:
            raise UsageError(next(iter(unavailable.values())))
    if not project.python.exists() and shutil.which("uv") is None:
        raise UsageError(f"{dest} has no .venv and uv is not found; install it: {_UV_INSTALL_HINT}")
    return project, seconds


def runnable_scenarios(
    project: svc.Project, names: Sequence[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Split `names` (default: every scenario) into those the project and this machine can
    run and the others, each with the reason (what to install or render it with)."""
    runnable, unavailable = [], {}
    for name in dict.fromkeys(names if names is not None else SCENARIOS):
        scenario = SCENARIOS[name]
        reason = None
        if scenario.via_nginx:
            if nginx.binary() is None:
                reason = f"nginx not found; install it with: {nginx.INSTALL_HINT}"
            else:
                try:
                    nginx.site_file(project.root)
                except nginx.NginxError as exc:
                    reason = str(exc)
        missing = [f for f in scenario.features if f not in project.features]
        if reason is None and missing:
            reason = (
                f"scenario {name} needs the {', '.join(missing)} feature(s); "
                f"{project.root} was generated without them"
            )
        if reason is None:
            runnable.append(name)
        else:
            unavailable[name] = reason
    return runnable, unavailable


def _measure(
    project: svc.Project,
    scenarios: Sequence[Scenario],
    seconds: int,
    connections: int,
    console: Console,
) -> tuple[dict[str, Any], list[Outcome]]:
    if not project.python.exists():
        with console.status(f"creating {project.root}/.venv with uv sync"):
            svc.create_environment(project)
    with ExitStack() as stack:
        with console.status("reading versions; starting and migrating the database if any"):
            machine = _machine(project)
            extra_env = stack.enter_context(svc.database(project))
        console.print(_machine_line(machine))
        # The harness's own redraws share wrk's core and leave the server's core alone; pinned
        # only now, so the database started above keeps the default affinity.
        stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
        os.sched_setaffinity(0, {WRK_CPU})
        progress = stack.enter_context(
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[figure]}"),
                console=console,
            )
        )
        outcomes = []
        for scenario in scenarios:
            if scenario.name == "overload":
                outcomes.append(
                    _measure_overload(project, scenario, extra_env, seconds, connections, progress)
                )
                continue
            if scenario.prepare is not None:
                scenario = replace(
                    scenario, path=scenario.path.format(**scenario.prepare(project, extra_env))
                )
            service_env = {
                **extra_env,
                **{project.env_prefix + name: value for name, value in scenario.service_settings},
            }
            sides, extra, cpu_s = _measure_interleaved(
                project, scenario, extra_env, service_env, seconds, connections, progress
            )
            if sides["baseline"].median.rps == 0:
                raise svc.ServiceError(f"{scenario.name}: the baseline completed no request")
            if scenario.run_figures is not None:
                extra |= scenario.run_figures(sides["baseline"].runs, sides["service"].runs, cpu_s)
            outcomes.append(Outcome(scenario, sides["baseline"], sides["service"], extra))
    return machine, outcomes


def _entry(
    project: svc.Project, server: svc.RunningServer, scenario: Scenario
) -> AbstractContextManager[svc.RunningServer | nginx.Proxied]:
    """Where wrk connects: the server itself, or the project's nginx in front of it (on the
    server's core, so the proxy's cost shows in the figures)."""
    if scenario.via_nginx:
        return nginx.front(project.root, server, cpu=svc.SERVER_CPU)
    return nullcontext(server)


def _measure_overload(
    project: svc.Project,
    scenario: Scenario,
    extra_env: dict[str, str],
    seconds: int,
    connections: int,
    progress: Progress,
) -> Outcome:
    """Both sides under overload.lua; the service also once below its cap (overload.py)."""
    runs: dict[str, list[overload.OverloadRun]] = {}
    unloaded = None
    for side in ("baseline", "service"):
        tasks = _add_tasks(progress, scenario, side, seconds)
        server = (
            overload.baseline_server(project)
            if side == "baseline"
            else overload.service_server(project, extra_env)
        )
        with server as running:
            url = running.url(scenario.path)
            if side == "service":
                unloaded = wrk.run_wrk(
                    url,
                    duration_s=seconds,
                    connections=overload.UNLOADED_CONNECTIONS,
                    cpu=WRK_CPU,
                )
            results = []
            for task, length in tasks:
                progress.start_task(task)
                run = overload.run_overload(
                    url, duration_s=length, connections=connections, cpu=WRK_CPU
                )
                running.check_alive()
                figure = f"{run.result.rps:,.0f} rps, {run.shed:,} shed"
                progress.update(task, completed=length, figure=figure)
                results.append(run)
            runs[side] = results[1:]
    assert unloaded is not None
    return Outcome(
        scenario,
        Side(runs=tuple(run.result for run in runs["baseline"])),
        Side(runs=tuple(run.result for run in runs["service"])),
        extra=overload.figures(runs["service"], unloaded, runs["baseline"]),
    )


def _add_tasks(
    progress: Progress, scenario: Scenario, side: str, seconds: int
) -> list[tuple[TaskID, int]]:
    """One progress task per run, the warm-up first; each with its length in seconds."""
    runs = scenario.runs
    labels = [("warm-up", WARMUP_S)] + [(f"run {i}/{runs}", seconds) for i in range(1, runs + 1)]
    return [
        (
            progress.add_task(
                f"{scenario.name:<12} {side:<8} {label:<8}", total=length, start=False, figure=""
            ),
            length,
        )
        for label, length in labels
    ]


def _measure_interleaved(
    project: svc.Project,
    scenario: Scenario,
    extra_env: Mapping[str, str],
    service_env: Mapping[str, str],
    seconds: int,
    connections: int,
    progress: Progress,
) -> tuple[dict[str, Side], dict[str, Any], dict[str, list[float]]]:
    """Both servers up at once, their runs alternated (baseline, service, baseline, ...).

    This machine's speed drifts by tens of percent over minutes; measured one side after the
    other, that drift lands in the ratio. Alternating puts both sides in the same moments, and
    the idle side costs the measured one nothing (both are pinned to the server core).
    Returns the sides, the figures of the scenario's `before_runs` if it has one, and the CPU
    seconds of each side's measured runs if it reads them.
    """
    sides = ("baseline", "service")
    tasks = {side: _add_tasks(progress, scenario, side, seconds) for side in sides}
    results: dict[str, list[wrk.WrkResult]] = {side: [] for side in sides}
    cpu_s: dict[str, list[float]] = {side: [] for side in sides}
    extra: dict[str, Any] = {}
    with ExitStack() as servers:
        targets, running = {}, {}
        for side in sides:
            server = (
                _baseline_server(project, scenario, extra_env)
                if side == "baseline"
                else svc.service(project, service_env, workers=scenario.workers)
            )
            running[side] = servers.enter_context(server)
            targets[side] = servers.enter_context(_entry(project, running[side], scenario))
        if scenario.before_runs is not None:
            extra = scenario.before_runs(
                running,
                seconds=seconds,
                connections=connections,
                wrk_cpu=WRK_CPU,
                progress=progress,
            )
        for index in range(scenario.runs + 1):  # the warm-up first, discarded
            for side in sides:
                task, length = tasks[side][index]
                pid = running[side].process.pid
                before = svc.process_cpu_s(pid) if scenario.cpu_per_run else 0.0
                results[side].append(
                    _run(targets[side], scenario, task, length, progress, connections)
                )
                if scenario.cpu_per_run and index > 0:
                    cpu_s[side].append(svc.process_cpu_s(pid) - before)
    measured = {side: Side(runs=tuple(results[side][1:])) for side in sides}
    return measured, extra, cpu_s


def _baseline_server(
    project: svc.Project, scenario: Scenario, extra_env: Mapping[str, str]
) -> AbstractContextManager[svc.RunningServer]:
    """The bare app, or the service itself with the scenario's baseline settings."""
    if scenario.baseline_settings is None:
        return svc.baseline(project, scenario.baseline_app, extra_env, workers=scenario.workers)
    env = {
        **extra_env,
        **{project.env_prefix + name: value for name, value in scenario.baseline_settings},
    }
    return svc.service(project, env, workers=scenario.workers, name="baseline")


def _run(
    server: svc.RunningServer | nginx.Proxied,
    scenario: Scenario,
    task: TaskID,
    length: int,
    progress: Progress,
    connections: int,
) -> wrk.WrkResult:
    """One wrk run; the server must still be alive after it."""
    progress.start_task(task)
    result = wrk.run_wrk(
        server.url(scenario.path),
        duration_s=length,
        connections=connections,
        cpu=WRK_CPU,
        tick=_ticker(progress, task),
    )
    server.check_alive()
    figure = f"{result.rps:,.0f} rps" + (f", {result.errors} errors" if result.errors else "")
    progress.update(task, completed=length, figure=figure)
    return result


def _ticker(progress: Progress, task: TaskID) -> Callable[[float], None]:
    def tick(elapsed: float) -> None:
        progress.update(task, completed=elapsed)

    return tick


def _table(outcomes: Sequence[Outcome], min_ratio: float | None) -> Table:
    table = Table()
    table.add_column("scenario")
    table.add_column("side")
    for name in ("rps", "p50 ms", "p99 ms", "errors", "ratio"):
        table.add_column(name, justify="right")
    for outcome in outcomes:
        for side, measured in (("baseline", outcome.baseline), ("service", outcome.service)):
            run = measured.median
            ratio = ""
            if side == "service":
                low = min_ratio is not None and outcome.ratio < min_ratio
                ratio = f"[{'red' if low else 'green'}]{outcome.ratio:.2f}[/]"
            table.add_row(
                outcome.scenario.name,
                side,
                f"{run.rps:,.0f}",
                f"{run.p50_ms:.2f}",
                f"{run.p99_ms:.2f}",
                f"[red]{measured.errors}[/]" if measured.errors else "0",
                ratio,
            )
    return table


def _report(
    machine: dict[str, Any], outcomes: Sequence[Outcome], seconds: int, connections: int
) -> dict[str, Any]:
    """The JSON document; fields may be added by later scenarios, never renamed."""
    return {
        "machine": machine,
        "protocol": {
            "warmup_s": WARMUP_S,
            "runs": RUNS,
            "duration_s": seconds,
            "connections": connections,
            "server_cpu": svc.SERVER_CPU,
            "wrk_cpu": WRK_CPU,
            "uvicorn_flags": list(svc.UVICORN_FLAGS),
            "figures": "median run by rps, p50/p99 from that run, errors summed over runs",
        },
        "scenarios": [_scenario_report(outcome) for outcome in outcomes],
    }


def _scenario_report(outcome: Outcome) -> dict[str, Any]:
    service, baseline = outcome.service.median, outcome.baseline.median
    return {
        "name": outcome.scenario.name,
        "rps": round(service.rps, 2),
        "p50_ms": round(service.p50_ms, 3),
        "p99_ms": round(service.p99_ms, 3),
        "errors": outcome.service.errors,
        "baseline_rps": round(baseline.rps, 2),
        "baseline_p99_ms": round(baseline.p99_ms, 3),
        "ratio": round(outcome.ratio, 4),
        "baseline_p50_ms": round(baseline.p50_ms, 3),
        "baseline_errors": outcome.baseline.errors,
        "method": outcome.scenario.method,
        "path": outcome.scenario.path,
        "workers": outcome.scenario.workers,
        "via_nginx": outcome.scenario.via_nginx,
        **outcome.extra,
        "runs": {
            "baseline": [{**asdict(run), "errors": run.errors} for run in outcome.baseline.runs],
            "service": [{**asdict(run), "errors": run.errors} for run in outcome.service.runs],
        },
    }


def _machine(project: svc.Project) -> dict[str, Any]:
    """Where the figures come from; `python` is the servers' interpreter, not Bulwark's."""
    versions = svc.runtime_versions(project)
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "python": versions["python"],
        "platform": platform.platform(),
        "wrk_version": wrk.wrk_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "fastapi": versions["fastapi"],
        "uvicorn": versions["uvicorn"],
    }


def _machine_line(machine: dict[str, Any]) -> str:
    return escape(
        f"{machine['cpu_model']}, {machine['cores']} cores · Python {machine['python']} · "
        f"fastapi {machine['fastapi']} · uvicorn {machine['uvicorn']} · {machine['wrk_version']}"
    )


def _cpu_model() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "unknown"
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown"
