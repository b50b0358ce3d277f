"""`bulwark matrix`: render every pairwise-covering answer set and run its own checks.

Each set is rendered from the template's working tree into DEST/<name>, then its `make check`
(ruff, ruff format --check, mypy --strict, pytest) and, when the project has one, its
`make manifests-check` run there. Sets run `jobs` at a time; uv's cache is shared by all, and
so is one mypy cache (DEST/.mypy_cache): the libraries every set imports are analysed once per
Python version, not once per set, and mypy re-checks any module whose source differs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import copier
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from generator.answers import REPO_ROOT
from generator.harness.pairwise import covering_rows, selected

STEP_TIMEOUT_S = 900.0
_TAIL_LINES = 60
# Copier changes the process's working directory while it renders: one render at a time.
_RENDER_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class AnswerSet:
    name: str
    python_version: str
    targets: tuple[str, ...]
    features: tuple[str, ...]

    @property
    def data(self) -> dict[str, object]:
        """Copier's answers for this set."""
        return {
            "project_slug": f"matrix-{self.name}",
            "python_version": self.python_version,
            "targets": list(self.targets),
            "features": list(self.features),
        }

    def describe(self) -> str:
        targets = ",".join(self.targets) or "-"
        return (
            f"py{self.python_version} targets={targets} features={','.join(self.features) or '-'}"
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    answers: dict[str, object]
    ok: bool
    seconds: float
    failed_step: str | None
    log: str


def answer_sets() -> list[AnswerSet]:
    """The matrix: all-on, all-off, then the pairwise rows, named m01, m02, ..."""
    return [
        AnswerSet(
            name=f"m{index:02d}",
            python_version=str(row["python_version"]),
            targets=tuple(selected(row, "target")),
            features=tuple(selected(row, "feature")),
        )
        for index, row in enumerate(covering_rows(), start=1)
    ]


def run_matrix(
    dest: Path, sets: Sequence[AnswerSet], *, jobs: int, json_path: Path | None, console: Console
) -> int:
    """Render and check every set; 0 when all pass, 1 otherwise."""
    dest.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, Outcome] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    ) as progress:
        tasks = {
            s.name: progress.add_task(
                escape(f"{s.name} {s.describe()}"), total=3, start=False, status=""
            )
            for s in sets
        }

        def run(answer_set: AnswerSet) -> Outcome:
            task = tasks[answer_set.name]
            progress.start_task(task)

            def step(label: str) -> None:
                progress.update(task, advance=1, status=label)

            outcome = check_set(dest / answer_set.name, answer_set, step, dest / ".mypy_cache")
            status = "[green]passed[/]" if outcome.ok else f"[red]failed: {outcome.failed_step}[/]"
            progress.update(task, completed=3, status=status)
            return outcome

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for outcome in pool.map(run, sets):
                outcomes[outcome.name] = outcome

    console.print(_table(sets, outcomes))
    failed = [o for o in outcomes.values() if not o.ok]
    for outcome in failed:
        console.print(f"[red]{outcome.name} failed at {escape(outcome.failed_step or '?')}[/]")
        console.print(escape(outcome.log))
    if json_path is not None:
        report = {
            "passed": len(outcomes) - len(failed),
            "failed": len(failed),
            "sets": [asdict(outcomes[s.name]) for s in sets],
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


def check_set(
    project: Path, answer_set: AnswerSet, advance: Callable[[str], None], mypy_cache: Path
) -> Outcome:
    """Render one set into `project` (replacing it) and run its checks with `mypy_cache` as
    mypy's cache; `advance` hears of each step as it starts."""
    started = time.monotonic()
    shutil.rmtree(project, ignore_errors=True)
    failed_step: str | None = None
    log = ""
    try:
        with _RENDER_LOCK:
            copier.run_copy(
                str(REPO_ROOT),
                project,
                data=answer_set.data,
                defaults=True,
                vcs_ref="HEAD",
                quiet=True,
            )
    except Exception as error:  # any render failure is this set's result, not the run's
        failed_step, log = "render", f"{type(error).__name__}: {error}"
    advance("make check")
    if failed_step is None:
        failed_step, log = _make(project, "check", mypy_cache)
    advance("manifests")
    if failed_step is None and _has_target(project, "manifests-check"):
        failed_step, log = _make(project, "manifests-check", mypy_cache)
    return Outcome(
        name=answer_set.name,
        answers=answer_set.data,
        ok=failed_step is None,
        seconds=round(time.monotonic() - started, 1),
        failed_step=failed_step,
        log=log,
    )


def _has_target(project: Path, target: str) -> bool:
    makefile = project / "Makefile"
    return makefile.is_file() and f"\n{target}:" in makefile.read_text(encoding="utf-8")


def _make(project: Path, target: str, mypy_cache: Path) -> tuple[str | None, str]:
    """(None, "") when `make target` passes, else (the step, its output's tail)."""
    # The samples bring their own embedded database and must not inherit a make session.
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAKE", "MFLAGS")) and key not in ("DATABASE_URL", "VIRTUAL_ENV")
    }
    environment["MYPY_CACHE_DIR"] = str(mypy_cache)
    try:
        done = subprocess.run(
            ["make", target],
            cwd=project,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=STEP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"make {target}", f"took longer than {STEP_TIMEOUT_S:.0f} s"
    if done.returncode == 0:
        return None, ""
    tail = "\n".join(done.stdout.strip().splitlines()[-_TAIL_LINES:])
    return f"make {target}", tail


def _table(sets: Sequence[AnswerSet], outcomes: dict[str, Outcome]) -> Table:
    table = Table(title="answer matrix")
    for column in ("set", "python", "targets", "features", "seconds", "result"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for answer_set in sets:
        outcome = outcomes[answer_set.name]
        table.add_row(
            answer_set.name,
            answer_set.python_version,
            ", ".join(answer_set.targets) or "-",
            ", ".join(answer_set.features) or "-",
            f"{outcome.seconds:.0f}",
            "[green]passed[/]" if outcome.ok else f"[red]{escape(outcome.failed_step or '')}[/]",
        )
    return table
