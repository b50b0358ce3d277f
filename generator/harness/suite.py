"""What `bulwark chaos` and `bulwark attack` share: a scenario's figures checked against its
targets (`Result`), the stage every scenario runs on, and the one way a run is reported (a
table of figure, measured, target; the JSON; the exit code), so both suites read alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from generator.harness import machine, project
from generator.harness.chaos.probe import Sample, timeline


@dataclass(frozen=True, slots=True)
class Check:
    """One figure against its target."""

    key: str
    label: str
    value: float
    unit: str
    target: str
    passed: bool


@dataclass
class Result:
    name: str
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def mark(self) -> str:
        """The verdict as the progress line prints it."""
        return "[green]passed[/]" if self.passed else "[red]missed a target[/]"

    def below(self, key: str, label: str, value: float, limit: float, unit: str) -> None:
        self.checks.append(Check(key, label, value, unit, f"< {limit:g}", value < limit))

    def at_most(self, key: str, label: str, value: float, limit: float, unit: str = "") -> None:
        self.checks.append(Check(key, label, value, unit, f"<= {limit:g}", value <= limit))

    def at_least(self, key: str, label: str, value: float, limit: float, unit: str = "") -> None:
        self.checks.append(Check(key, label, value, unit, f">= {limit:g}", value >= limit))

    def equal(self, key: str, label: str, value: float, wanted: float, unit: str = "") -> None:
        self.checks.append(Check(key, label, value, unit, f"= {wanted:g}", value == wanted))

    def report(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "checks": [
                {
                    "key": c.key,
                    "figure": c.label,
                    "value": c.value,
                    "unit": c.unit,
                    "target": c.target,
                    "passed": c.passed,
                }
                for c in self.checks
            ],
            **{c.key: c.value for c in self.checks},
            "figures": self.figures,
            "settings": self.settings,
            "events": [{"t_s": round(t, 3), "event": name} for t, name in self.events],
            "timeline": timeline(self.samples),
        }


@dataclass(frozen=True, slots=True)
class Stage:
    """What every scenario of one run starts from."""

    # machine.info: the versions and the CPU the figures were measured with.
    machine: dict[str, Any]
    # DATABASE_URL of the migrated embedded database, when the project has postgres.
    db_env: dict[str, str]
    # The seeded item's route, or None without postgres.
    item_path: str | None
    # The CPUs the harness could use before it pinned itself to the wrk core.
    cpus: tuple[int, ...]


@contextmanager
def stage(loaded: project.Project, console: Console) -> Iterator[Stage]:
    """The environment installed, the versions read, the database (if any) started, migrated
    and seeded, this process on the wrk core; the database stopped on the way out."""
    machine.ensure_environment(loaded, console)
    with ExitStack() as stack:
        with console.status("reading versions; starting and migrating the database if any"):
            found = machine.info(loaded)
            db_env = stack.enter_context(project.database(loaded))
            item_path = None
            if "postgres" in loaded.features:
                item_path = f"/items/{project.seed_item(loaded, db_env)}"
        console.print(machine.line(found))
        cpus = stack.enter_context(machine.on_wrk_core())
        yield Stage(found, db_env, item_path, cpus)


def run_suite(
    run: Callable[[Path | None], tuple[dict[str, Any], list[Result]]],
    *,
    errors: tuple[type[Exception], ...],
    title: str,
    summary: str,
    about: Mapping[str, Any],
    json_path: Path | None,
    console: Console,
) -> int:
    """Run the scenarios (`run` keeps server output in the directory it is given, if any, and
    returns machine.info with the results); print each figure against its target, then
    `summary`; write the JSON (`about`: how the run was made) if asked. 0 when every target is
    met, 1 when one is missed or `run` raised one of `errors`, 130 when interrupted."""
    log_dir = None if json_path is None else json_path.with_suffix(".logs")
    try:
        found, results = run(log_dir)
    except errors as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: every server was stopped")
        return 130
    console.print(results_table(results, title))
    console.print(summary)
    if json_path is not None:
        report = {
            "machine": found,
            **about,
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
