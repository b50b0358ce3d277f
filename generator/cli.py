"""The `bulwark` command: presets, early validation and flags over copier's copy and update.

It never renders a file itself, so whatever it makes, plain `copier copy`/`copier update` can
make too; `new` then commits the result to a fresh git repository, which `copier update` needs.
Exit codes: 0 ok, 1 a run failed (e.g. a load-test ratio), 2 usage or invalid answers.
"""

import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import copier
import typer
import yaml
from copier.errors import UnsafeTemplateError, UserMessageError
from rich.console import Console
from rich.table import Table

from generator import __version__
from generator.answers import REPO_ROOT, AnswerError, merge, parse_data, questions, validate
from generator.presets import PRESETS, get_preset

USAGE_ERROR = 2

out = Console()
err = Console(stderr=True)

app = typer.Typer(
    name="bulwark",
    no_args_is_help=True,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        out.print(f"bulwark {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Generate and update production FastAPI services from the Bulwark template."""


def _refuse(messages: Iterable[str]) -> typer.Exit:
    """Report usage problems on stderr; the caller raises the result to exit 2."""
    for message in messages:
        # Messages quote rules such as [a-z0-9-], which rich would read as markup.
        err.print(message, markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(USAGE_ERROR)


def _interactive(defaults: bool) -> bool:
    """Copier prompts only when a person can answer: a TTY on stdin and no --defaults."""
    return sys.stdin.isatty() and not defaults


def _run_copier(action: Callable[[], object]) -> None:
    """Run a copier call, turning its user-facing errors into exit 2.

    Copier removes a destination it created when it fails (`cleanup_on_error`), so a refused
    `new` leaves nothing behind.
    """
    try:
        action()
    except (UserMessageError, UnsafeTemplateError, ValueError) as error:
        raise _refuse([str(error)]) from None


def _git(dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(dest), *args], capture_output=True, text=True, check=False
    )


def _identity(dest: Path, answers: dict[str, str]) -> list[str]:
    """Git options naming the author: git's own identity if it has one, else the answers'.

    A machine with no `user.name`/`user.email` (a fresh container, CI) would make
    `git commit` fail; the project's author is the next best name for its first commit.
    """
    if all(_git(dest, "config", key).stdout.strip() for key in ("user.name", "user.email")):
        return []
    return [
        "-c",
        f"user.name={answers['author_name']}",
        "-c",
        f"user.email={answers['author_email']}",
    ]


def _commit_rendered(dest: Path) -> None:
    """Make DEST a git repository holding the rendered tree as its first commit.

    `copier update` needs the project in git to tell the owner's edits from the template's.
    The branch is main, the one the generated CI workflow runs on; hooks are skipped since
    the commit is copier's output as rendered, not the owner's work.
    """
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text(encoding="utf-8"))
    revision = f" at {answers['_commit']}" if "_commit" in answers else ""
    message = (
        f"Generate {answers['project_name']} from the Bulwark template\n\n"
        f"Rendered by `bulwark new` from {answers['_src_path']}{revision}.\n"
        "Pull template upgrades with `bulwark update` (or `copier update`).\n"
    )

    def run(*args: str) -> None:
        if (done := _git(dest, *args)).returncode != 0:
            err.print(
                f"{dest}: rendered, but git failed; commit the tree yourself before "
                "`bulwark update`:",
                done.stderr.strip(),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1)

    run("init", "-q", "-b", "main")
    run("add", "--all")
    # Read after `init`: a parent repository's own identity no longer applies inside DEST.
    run(*_identity(dest, answers), "commit", "-q", "--no-verify", "-m", message)
    out.print(
        f"{dest}: a git repository on branch main, the rendered tree committed.", soft_wrap=True
    )


@app.command()
def new(
    dest: Annotated[Path, typer.Argument(help="Directory to create the service in.")],
    preset: Annotated[
        str | None,
        typer.Option(help=f"Named answer set: {', '.join(PRESETS)} (see `bulwark presets`)."),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Deployment target, repeatable ({', '.join(questions()['targets'].choices)}); "
            "replaces the preset's targets."
        ),
    ] = None,
    feature: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Service feature, repeatable ({', '.join(questions()['features'].choices)}); "
            "replaces the preset's features."
        ),
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            "-d",
            help="Answer as KEY=VALUE (repeatable, wins over flags); "
            "lists comma-separated or as JSON.",
        ),
    ] = None,
    defaults: Annotated[
        bool,
        typer.Option("--defaults", help="Never prompt: unanswered questions take their defaults."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Render into a non-empty DEST, replacing files.")
    ] = False,
    vcs_ref: Annotated[
        str | None,
        typer.Option(help="Template git ref; copier's default is the latest tag, else HEAD."),
    ] = None,
    use_git: Annotated[
        bool,
        typer.Option(
            "--git/--no-git",
            help="Make DEST a git repository with the rendered tree as its first commit "
            "(skipped when DEST already is one).",
        ),
    ] = True,
) -> None:
    """Generate a service in DEST; answers are checked before anything is written."""
    try:
        chosen = get_preset(preset).answers() if preset else {}
        answers = merge(chosen, target or (), feature or (), parse_data(data or ()))
    except AnswerError as error:
        raise _refuse([str(error)]) from None
    if problems := validate(answers):
        raise _refuse(problems)
    if dest.exists() and not dest.is_dir():
        raise _refuse([f"{dest}: exists and is not a directory"])
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise _refuse([f"{dest}: exists and is not empty (pass --overwrite to render into it)"])
    already_a_repository = (dest / ".git").exists()
    _run_copier(
        lambda: copier.run_copy(
            str(REPO_ROOT),
            dest,
            data=answers,
            defaults=not _interactive(defaults),
            overwrite=overwrite,
            vcs_ref=vcs_ref,
        )
    )
    if not use_git:
        return
    if already_a_repository:
        out.print(
            f"{dest}: already a git repository; review and commit the rendered files.",
            soft_wrap=True,
        )
        return
    _commit_rendered(dest)


@app.command()
def presets() -> None:
    """List the named answer sets `new --preset` accepts."""
    table = Table("name", "description", "targets", "features", title="Bulwark presets")
    for preset in PRESETS.values():
        table.add_row(
            preset.name,
            preset.description,
            ", ".join(preset.targets) or "-",
            ", ".join(preset.features) or "-",
        )
    out.print(table)


@app.command()
def update(
    dest: Annotated[Path, typer.Argument(help="The generated service to update.")] = Path("."),
    vcs_ref: Annotated[
        str | None,
        typer.Option(help="Template git ref to update to; copier's default is the latest tag."),
    ] = None,
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Never prompt: keep the recorded answers.")
    ] = False,
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            help="Let the template run its migrations (commands that carry renamed answers "
            "and files over); copier refuses an update that needs them otherwise.",
        ),
    ] = False,
) -> None:
    """Pull template changes into DEST; conflicts are left inline for you to resolve.

    Only a clean git work tree is updated, so `git diff` shows exactly what the update did
    and `git checkout .` undoes it.
    """
    if not dest.is_dir():
        raise _refuse([f"{dest}: no such directory"])
    if _git(dest, "rev-parse", "--is-inside-work-tree").returncode != 0:
        raise _refuse([f"{dest}: not a git repository; commit the project before updating it"])
    if dirty := _git(dest, "status", "--porcelain").stdout.strip():
        raise _refuse(
            [f"{dest}: uncommitted changes; commit or stash them before updating:", dirty]
        )
    _run_copier(
        lambda: copier.run_update(
            dest,
            defaults=not _interactive(defaults),
            overwrite=True,
            conflict="inline",
            vcs_ref=vcs_ref,
            unsafe=trust,
        )
    )


@app.command()
def loadtest(
    dest: Annotated[Path, typer.Argument(help="The generated service to load.")],
    scenario: Annotated[
        list[str] | None, typer.Option(help="Scenario to run (repeatable; default: health).")
    ] = None,
    duration: Annotated[float, typer.Option(help="Seconds of load per run.")] = 10.0,
    connections: Annotated[int, typer.Option(min=1, help="Concurrent connections.")] = 64,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON here.")
    ] = None,
    min_ratio: Annotated[
        float | None,
        typer.Option(help="Fail (exit 1) when rps falls below this ratio of bare FastAPI."),
    ] = None,
    run_all: Annotated[
        bool,
        typer.Option(
            "--all", help="Run every scenario DEST's features allow; note the others as skipped."
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Write report.json, report.png and index.html (table, plot) into this directory.",
        ),
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option(
            min=1, help="Measured runs per side for every scenario (default: 3; loop-monitor 7)."
        ),
    ] = None,
    no_rate_limit: Annotated[
        bool,
        typer.Option(
            "--no-rate-limit",
            help="Turn the service's default per-client rate limit off: wrk is one client.",
        ),
    ] = False,
    container: Annotated[
        bool,
        typer.Option(
            "--container",
            help="Run each scenario's container twin (default: health, and db-read with "
            "postgres): the service in its hardened container against the same service "
            "outside it.",
        ),
    ] = False,
) -> None:
    """Load DEST and a bare FastAPI app the same way and report the ratio.

    Only answers with a scenario's expected status count; over 0.1 % of others on either side
    fails the scenario (exit 1) with no ratio.
    """
    # Imported here: the harness pulls in load-test machinery the other commands never need.
    from generator.harness.load.runner import run_loadtest

    names = scenario or ([] if run_all else ["health"])
    if container:
        from generator.harness.load.container import default_mirrored
        from generator.harness.load.scenarios import SCENARIOS

        if run_all:
            out.print("[red]error:[/] --all already runs the container scenarios; drop --container")
            raise typer.Exit(2)
        names = [f"container-{name}" for name in scenario or default_mirrored(dest, SCENARIOS)]
    code = run_loadtest(
        dest,
        names,
        duration=duration,
        connections=connections,
        json_path=json_path,
        min_ratio=min_ratio,
        console=out,
        run_all=run_all,
        report_dir=report,
        command=shlex.join(["bulwark", *sys.argv[1:]]),
        repeat=repeat,
        no_rate_limit=no_rate_limit,
    )
    if code:
        raise typer.Exit(code)


@app.command()
def chaos(
    dest: Annotated[Path, typer.Argument(help="The generated service to break (as for loadtest).")],
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="Fault to inject (repeatable): postgres-down, redis-down, sigterm, "
            "worker-kill, hang."
        ),
    ] = None,
    all_scenarios: Annotated[
        bool, typer.Option("--all", help="Run every scenario, in the order above.")
    ] = False,
    outage: Annotated[
        float,
        typer.Option(help="Seconds Postgres (postgres-down) or Redis (redis-down) stay down."),
    ] = 10.0,
    drain: Annotated[
        float, typer.Option(help="sigterm: the service's SHUTDOWN_DELAY_S, readiness 503 first.")
    ] = 2.0,
    connections: Annotated[int, typer.Option(min=1, help="wrk's concurrent connections.")] = 16,
    latency_target: Annotated[
        float,
        typer.Option(
            help="postgres-down: p99 bound in ms for 503s and /health while down (target: 50); "
            "raise it only as a tripwire on a machine too busy to hold it."
        ),
    ] = 50.0,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the figures as JSON here (server logs beside)."),
    ] = None,
) -> None:
    """Break DEST's dependencies under wrk load; exit 1 when a fault's target is missed."""
    from generator.harness.chaos.runner import run_chaos
    from generator.harness.chaos.scenarios import SCENARIOS

    chosen = list(SCENARIOS) if all_scenarios else (scenario or [])
    code = run_chaos(
        dest,
        chosen,
        outage_s=outage,
        drain_s=drain,
        connections=connections,
        json_path=json_path,
        console=out,
        latency_target_ms=latency_target,
    )
    if code:
        raise typer.Exit(code)


@app.command()
def attack(
    dest: Annotated[Path, typer.Argument(help="The generated service to attack (postgres on).")],
    scenario: Annotated[
        list[str] | None,
        typer.Option(help="Attack to run (repeatable; default: every one DEST's answers allow)."),
    ] = None,
    limit: Annotated[
        int, typer.Option(help="Per-client requests a minute the spoofing attacks run under.")
    ] = 5,
    p99_factor: Annotated[
        float,
        typer.Option(
            help="Legitimate p99 under attack behind nginx, as a multiple of the unloaded p99 "
            "(target: 2); raise it only as a tripwire on a machine too busy to hold it."
        ),
    ] = 2.0,
    window: Annotated[float, typer.Option(help="Seconds each attack phase lasts.")] = 3.0,
    loop_bound: Annotated[
        float,
        typer.Option(
            help="ms the event loop may be held (target: 100; a loop-monitor bucket: 100, 250, "
            "500, 1000, 2500); raise it only as a tripwire on a machine too busy to hold it."
        ),
    ] = 100.0,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the figures as JSON here (server logs beside)."),
    ] = None,
) -> None:
    """Attack DEST with hostile clients, directly and behind nginx; exit 1 on a missed target."""
    from generator.harness.abuse.runner import run_attack

    code = run_attack(
        dest,
        scenario or [],
        limit=limit,
        p99_factor=p99_factor,
        window_s=window,
        json_path=json_path,
        console=out,
        loop_bound_s=loop_bound / 1000,
    )
    if code:
        raise typer.Exit(code)


@app.command()
def matrix(
    dest: Annotated[
        Path, typer.Option(help="Directory the answer sets are rendered into, one each.")
    ] = Path("build/matrix"),
    list_only: Annotated[
        bool, typer.Option("--list", help="Print the answer sets and exit; render nothing.")
    ] = False,
    jobs: Annotated[int, typer.Option(min=1, help="Answer sets checked at once.")] = 2,
    only: Annotated[
        list[str] | None, typer.Option(help="Check only these sets (repeatable, e.g. m03).")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON here.")
    ] = None,
) -> None:
    """Render the pairwise-covering answer sets and run each one's own checks."""
    from generator.harness.matrix import answer_sets, run_matrix

    sets = answer_sets()
    if only:
        unknown = sorted(set(only) - {s.name for s in sets})
        if unknown:
            raise _refuse([f"--only: unknown set {', '.join(unknown)}"])
        sets = [s for s in sets if s.name in only]
    if list_only:
        table = Table("set", "python", "targets", "features", title="answer matrix")
        for answer_set in sets:
            table.add_row(
                answer_set.name,
                answer_set.python_version,
                ", ".join(answer_set.targets) or "-",
                ", ".join(answer_set.features) or "-",
            )
        out.print(table)
        return
    code = run_matrix(dest, sets, jobs=jobs, json_path=json_path, console=out)
    if code:
        raise typer.Exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv) and return its exit code instead of exiting."""
    try:
        app(args=argv, prog_name="bulwark")
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        return 1  # sys.exit("message") prints the message and means failure
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
