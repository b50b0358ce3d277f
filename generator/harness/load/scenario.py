"""What a load-test scenario is, and the measuring most of them share.

A `Scenario` owns everything about its load shape: whether a project can run it
(`unavailable`), how it is measured (`measure`, by default alternated runs of both sides),
which answers are good (`expect`), its own figures (`figures`) and its target (`verdict`,
judged from its JSON entry alone so a saved report can be redrawn). The runner, the table,
the JSON and the report iterate over scenarios and know none by name.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from rich.progress import Progress, TaskID

from generator.harness import apps, nginx, servers, wrk
from generator.harness.machine import WRK_CPU
from generator.harness.project import Project, ServiceError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WARMUP_S = 3
RUNS = 3
# Over this share of unexpected answers on either side, a scenario's figures are refusals or
# failures, not throughput: it fails and reports no ratio.
MAX_ERROR_SHARE = 0.001
# Plot colours, shared by the report and the scenarios that draw a panel of their own.
BASELINE_COLOUR = "#9e9e9e"
SERVICE_COLOUR = "#1565c0"
# What an unexpected status most likely means, when it is most of the unexpected answers.
_CAUSES = {
    404: "404s: the route does not exist on that side",
    500: "500s: the app raised; run it by hand to see the traceback",
    503: "503s: the service shed load or a dependency is down (see /health/detailed)",
    504: "504s: requests ran past the service's deadline",
}


class Target(Protocol):
    """Where wrk connects: a server, or nginx in front of one."""

    def url(self, path: str) -> str: ...
    def check_alive(self) -> None: ...
    def cpu_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """A scenario's target in words, and whether this run met it (None: report only)."""

    target: str
    met: bool | None


@dataclass(frozen=True, slots=True)
class Bench:
    """What every scenario of one `bulwark loadtest` run measures with."""

    project: Project
    # The migrated database's environment (DATABASE_URL), when the project has one.
    env: Mapping[str, str]
    seconds: int
    connections: int
    progress: Progress
    # Measured runs per side for every scenario (`--repeat`); None: each scenario's own.
    repeat: int | None = None
    # `--no-rate-limit`: the service's default per-client limit off on every service side.
    no_rate_limit: bool = False

    def runs(self, scenario: Scenario) -> int:
        return self.repeat or scenario.runs

    def service_env(self, settings: Sequence[tuple[str, str]]) -> dict[str, str]:
        """The environment of a service side: the database's, then the settings (by name
        without the project's prefix), the default rate limit off if asked."""
        own = ({"RATE_LIMIT_DEFAULT": ""} if self.no_rate_limit else {}) | dict(settings)
        return {**self.env, **self.project.settings_env(own)}


@dataclass(frozen=True, slots=True)
class Side:
    """The measured runs of one server for one scenario, with its CPU seconds per run."""

    runs: tuple[wrk.WrkResult, ...]
    cpu_s: tuple[float, ...] = ()

    @property
    def median(self) -> wrk.WrkResult:
        """The run with the median rps; its p50/p99 are reported with it, so each reported
        figure comes from one real run rather than a blend of three."""
        return sorted(self.runs, key=lambda run: run.good_rps)[len(self.runs) // 2]

    @property
    def errors(self) -> int:
        """Socket errors and non-2xx/3xx responses, summed over the measured runs."""
        return sum(run.errors for run in self.runs)

    @property
    def unexpected(self) -> int:
        """Answers without an expected status and requests without an answer, summed."""
        return sum(run.unexpected for run in self.runs)

    @property
    def error_share(self) -> float:
        sent = sum(run.requests + run.socket_errors for run in self.runs)
        return self.unexpected / sent if sent else 1.0

    @property
    def statuses(self) -> dict[int, int]:
        """Answers by status, summed over the measured runs."""
        total: Counter[int] = Counter()
        for run in self.runs:
            total.update(run.statuses)
        return dict(sorted(total.items()))

    @property
    def socket_errors(self) -> int:
        return sum(run.socket_errors for run in self.runs)

    @property
    def cpu_us(self) -> float | None:
        """Server CPU per good answer, median over the runs; None when not read, or when a
        run answered nothing or read no CPU tick."""
        if not self.cpu_s or any(r.good <= 0 for r in self.runs) or min(self.cpu_s) <= 0:
            return None
        return statistics.median(cpu_us_per_request(self.runs, self.cpu_s))


def cpu_us_per_request(runs: Sequence[wrk.WrkResult], cpu_s: Sequence[float]) -> list[float]:
    """The server's CPU time per good answer of each run, in microseconds."""
    if len(runs) != len(cpu_s):
        raise ValueError(f"{len(runs)} runs but {len(cpu_s)} CPU readings")
    if any(run.good <= 0 or cpu <= 0 for run, cpu in zip(runs, cpu_s, strict=True)):
        raise ServiceError("a run answered no request or used no CPU")
    return [cpu / run.good * 1e6 for run, cpu in zip(runs, cpu_s, strict=True)]


def pair_ratios(baseline: Sequence[wrk.WrkResult], service: Sequence[wrk.WrkResult]) -> list[float]:
    """service rps / baseline rps of each alternated pair, in run order."""
    if len(baseline) != len(service) or not baseline:
        raise ValueError(f"unpaired runs: {len(baseline)} baseline, {len(service)} service")
    if any(run.good_rps <= 0 for run in baseline):
        raise ServiceError("a baseline run completed no request")
    return [s.good_rps / b.good_rps for b, s in zip(baseline, service, strict=True)]


def with_failures(row: dict[str, Any], sides: Mapping[str, Side]) -> dict[str, Any]:
    """`row`, with a `failed` entry naming each side whose unexpected answers pass the bound."""
    failed = [
        f"the {name} side had {side.error_share:.1%} unexpected answers"
        for name, side in sides.items()
        if side.error_share > MAX_ERROR_SHARE
    ]
    return row | {"failed": "; ".join(failed)} if failed else row


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of per-pair ratios: how far one figure can be trusted."""
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def pairs(baseline: Side, service: Side) -> dict[str, dict[str, float]]:
    """Each figure's service / baseline ratio per alternated pair, as a spread. CPU is
    baseline / service (efficiency), so every ratio reads "higher is better for the service"
    except the latencies."""
    found = {
        "rps": spread(pair_ratios(baseline.runs, service.runs)),
        "p50": spread(
            [s.p50_ms / b.p50_ms for b, s in zip(baseline.runs, service.runs, strict=True)]
        ),
        "p99": spread(
            [s.p99_ms / b.p99_ms for b, s in zip(baseline.runs, service.runs, strict=True)]
        ),
    }
    if baseline.cpu_us is not None and service.cpu_us is not None:
        off = cpu_us_per_request(baseline.runs, baseline.cpu_s)
        on = cpu_us_per_request(service.runs, service.cpu_s)
        found["cpu"] = spread([b / s for b, s in zip(off, on, strict=True)])
    return found


@dataclass(frozen=True, slots=True)
class Outcome:
    scenario: Scenario
    baseline: Side
    service: Side
    # Scenario-specific figures added to its JSON entry (overload: shed_p99_ms...).
    extra: dict[str, Any] = field(default_factory=dict)
    # Why its figures are not to be read (too many unexpected answers); then no ratio.
    failure: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.failure is not None:
            return None
        return self.service.median.good_rps / self.baseline.median.good_rps


@dataclass(frozen=True, slots=True)
class Scenario:
    """One load shape, GET on `path` on both sides alike; by default a bare FastAPI baseline
    (`baseline_app`) and alternated runs (`measure`)."""

    name: str
    description: str
    path: str
    method: str = "GET"
    features: tuple[str, ...] = ()
    baseline_app: Path = apps.BASELINE
    # Service settings for this scenario, by name without the project's env prefix.
    service_settings: tuple[tuple[str, str], ...] = ()
    # uvicorn worker processes on both sides; through the project's nginx site or direct.
    workers: int = 1
    via_nginx: bool = False
    # Measured runs per side; a tiny difference needs more pairs than the default.
    runs: int = RUNS
    # The statuses that count as served; anything else is reported and, past
    # MAX_ERROR_SHARE, fails the scenario.
    expect: tuple[int, ...] = (200,)
    # The target on the rps ratio, if any, and how the table words it.
    target_ratio: float | None = None
    target_wording: str = "rps ratio"
    # Whether `draw_over_time` draws something (the report's bottom panel).
    over_time: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.method != "GET":
            raise ValueError(f"{self.name}: wrk sends GET only; other methods need a Lua script")

    # --- usage -------------------------------------------------------------------------------

    def unavailable(self, project: Project) -> str | None:
        """Why `project` on this machine cannot run the scenario (what to install or render
        it with), or None."""
        if self.via_nginx:
            if nginx.binary() is None:
                return f"nginx not found; install it with: {nginx.INSTALL_HINT}"
            try:
                nginx.site_file(project.root)
            except nginx.NginxError as exc:
                return str(exc)
        missing = [f for f in self.features if f not in project.features]
        if missing:
            return (
                f"scenario {self.name} needs the {', '.join(missing)} feature(s); "
                f"{project.root} was generated without them"
            )
        return None

    # --- measurement -------------------------------------------------------------------------

    def measure(self, bench: Bench) -> Outcome:
        """Both servers up at once, their runs alternated (baseline, service, baseline, ...).

        This machine's speed drifts by tens of percent over minutes; measured one side after
        the other, that drift lands in the ratio. Alternating puts both sides in the same
        moments, and the idle side costs the measured one nothing (both are pinned to the
        server core). Each run's server CPU is read from its whole process tree.
        """
        path = self.prepare(bench)
        sides = ("baseline", "service")
        with ExitStack() as stack:
            running = {
                "baseline": stack.enter_context(self.baseline_server(bench)),
                "service": stack.enter_context(self.service_server(bench)),
            }
            targets = {
                side: stack.enter_context(self.entry(bench, running[side])) for side in sides
            }
            extra = self.before_runs(running, bench)
            measured = self.alternate(targets, path, bench)
        return Outcome(replace(self, path=path), measured["baseline"], measured["service"], extra)

    def alternate(
        self, targets: Mapping[str, Target], path: str, bench: Bench, label: str = ""
    ) -> dict[str, Side]:
        """One run of each target in turn, a discarded warm-up first, then `bench.runs`; each
        run's server CPU read from its whole process tree. `label` names the progress rows
        (the scenario's name unless given)."""
        runs = bench.runs(self)
        tasks = {
            side: add_tasks(bench.progress, label or self.name, side, bench.seconds, runs)
            for side in targets
        }
        results: dict[str, list[wrk.WrkResult]] = {side: [] for side in targets}
        cpu_s: dict[str, list[float]] = {side: [] for side in targets}
        for index in range(runs + 1):
            for side, target in targets.items():
                task, length = tasks[side][index]
                before = target.cpu_s()
                run = self.run_once(target, path, task, length, bench)
                if index > 0:
                    cpu_s[side].append(target.cpu_s() - before)
                    results[side].append(run)
        return {side: Side(tuple(results[side]), tuple(cpu_s[side])) for side in targets}

    def prepare(self, bench: Bench) -> str:
        """The path to load, once both sides' data is in place (before any server starts)."""
        return self.path

    def baseline_server(self, bench: Bench) -> AbstractContextManager[servers.RunningServer]:
        return servers.baseline(bench.project, self.baseline_app, bench.env, workers=self.workers)

    def service_server(self, bench: Bench) -> AbstractContextManager[servers.RunningServer]:
        return servers.service(
            bench.project, bench.service_env(self.service_settings), workers=self.workers
        )

    def entry(self, bench: Bench, server: servers.RunningServer) -> AbstractContextManager[Target]:
        """Where wrk connects: the server itself, or the project's nginx in front of it (on
        the server's core, so the proxy's cost shows in the figures)."""
        if self.via_nginx:
            return nginx.front(bench.project.root, server, cpu=servers.SERVER_CPU)
        return nullcontext(server)

    def before_runs(
        self, running: Mapping[str, servers.RunningServer], bench: Bench
    ) -> dict[str, Any]:
        """Measurements of the scenario's own with both servers up, before the alternated
        runs; they join its JSON entry."""
        return {}

    def run_once(
        self, target: Target, path: str, task: TaskID, length: int, bench: Bench
    ) -> wrk.WrkResult:
        """One wrk run; the server must still be alive after it."""
        progress = bench.progress
        progress.start_task(task)
        result = wrk.run_wrk(
            target.url(path),
            duration_s=length,
            connections=bench.connections,
            cpu=WRK_CPU,
            tick=ticker(progress, task),
            expect=self.expect,
        )
        target.check_alive()
        figure = f"{result.good_rps:,.0f} rps" + (
            f", {result.unexpected:,} unexpected" if result.unexpected else ""
        )
        progress.update(task, completed=length, figure=figure)
        return result

    # --- judging -----------------------------------------------------------------------------

    def failure(self, outcome: Outcome, bench: Bench) -> str | None:
        """Why the outcome's figures cannot be read, naming the likely cause, or None."""
        problems = []
        for side, measured in (("baseline", outcome.baseline), ("service", outcome.service)):
            if measured.error_share <= MAX_ERROR_SHARE:
                continue
            other = {s: n for s, n in measured.statuses.items() if s not in self.expect}
            sockets = {
                kind: sum(getattr(run, f"{kind}_errors") for run in measured.runs)
                for kind in ("connect", "read", "write", "timeout")
            }
            shown = ", ".join(
                [f"{n:,} x {s}" for s, n in other.items()]
                + [f"{n:,} {kind} errors" for kind, n in sockets.items() if n]
            )
            problem = (
                f"{side}: {measured.error_share:.1%} of answers were not "
                f"{'/'.join(map(str, self.expect))} ({shown})"
            )
            cause = self.cause(other, sockets, bench)
            problems.append(f"{problem}; {cause}" if cause else problem)
        return "; ".join(problems) or None

    def cause(
        self, other: Mapping[int, int], sockets: Mapping[str, int], bench: Bench
    ) -> str | None:
        """The likely reason for the most common unexpected answer, when one is known."""
        if sum(sockets.values()) > sum(other.values()):
            if sockets["timeout"] >= sum(sockets.values()) / 2:
                return (
                    "timeouts: answers took over wrk's 2 s; the server core is overloaded "
                    "or shared with other work"
                )
            return "socket errors: the server closed or refused connections"
        if not other:
            return None
        status = max(other, key=lambda s: other[s])
        if status == 429:
            if bench.no_rate_limit:
                return "429s with the default limit off: a route's own limit applies"
            return (
                "429s: the default per-client rate limit applies to the load generator; pass "
                f"--no-rate-limit or set {bench.project.env_prefix}RATE_LIMIT_DEFAULT="
            )
        return _CAUSES.get(status)

    def figures(self, baseline: Side, service: Side) -> dict[str, Any]:
        """The scenario's own figures from its measured runs, for its JSON entry."""
        return {}

    def verdict(self, entry: Mapping[str, Any]) -> Verdict:
        """The target, judged on the scenario's JSON entry alone."""
        if entry.get("failed"):
            return Verdict(f"failed: {entry['failed']}", False)
        if self.target_ratio is None:
            return Verdict("report only", None)
        ratio = entry["ratio"]
        return Verdict(f"{self.target_wording} ≥ {self.target_ratio:g}", ratio >= self.target_ratio)

    def tables(self, entry: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
        """Tables of the scenario's own, from its JSON entry: title -> rows of text by column,
        shown under the main table and on the report's page."""
        return {}

    def draw_over_time(self, axes: Axes, entry: Mapping[str, Any]) -> None:
        """The report's bottom panel, for a scenario with `over_time`."""
        raise NotImplementedError(f"{self.name} draws no latency over time")


def add_tasks(
    progress: Progress, name: str, side: str, seconds: int, runs: int
) -> list[tuple[TaskID, int]]:
    """One progress task per run, the warm-up first; each with its length in seconds."""
    labels = [("warm-up", WARMUP_S)] + [(f"run {i}/{runs}", seconds) for i in range(1, runs + 1)]
    return [
        (
            progress.add_task(
                f"{name:<12} {side:<8} {label:<8}", total=length, start=False, figure=""
            ),
            length,
        )
        for label, length in labels
    ]


def ticker(progress: Progress, task: TaskID) -> Callable[[float], None]:
    def tick(elapsed: float) -> None:
        progress.update(task, completed=elapsed)

    return tick
