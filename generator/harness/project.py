"""A generated project as the harness sees it: its answers, its environment, its database.

Every command here runs inside the project (its own `.venv`, its own `scripts/devdb.py`), so
the servers under test run the project's interpreter and packages, never Bulwark's.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

# Bounds for the one-shot project commands: an environment install, the embedded database.
SYNC_TIMEOUT_S = 900.0
STEP_TIMEOUT_S = 180.0
TAIL_LINES = 30


class NotAProjectError(ValueError):
    """DEST is not a project generated from this template (a usage error)."""


class ServiceError(RuntimeError):
    """A server, or a step preparing one, failed; the message carries its output's tail."""


@dataclass(frozen=True, slots=True)
class Project:
    """What the harness needs to know about a generated project, from its Copier answers."""

    root: Path
    package_name: str
    features: tuple[str, ...]

    @classmethod
    def load(cls, root: Path) -> Project:
        # Absolute: project commands run with the project as their working directory.
        root = root.resolve()
        answers_file = root / ".copier-answers.yml"
        if not answers_file.is_file():
            raise NotAProjectError(f"{root} is not a generated project: no .copier-answers.yml")
        answers = yaml.safe_load(answers_file.read_text(encoding="utf-8")) or {}
        package_name = answers.get("package_name") if isinstance(answers, dict) else None
        if not isinstance(package_name, str) or not package_name:
            raise NotAProjectError(f"{answers_file} has no package_name")
        features = answers.get("features") or []
        if not isinstance(features, list):
            raise NotAProjectError(f"{answers_file}: features is not a list")
        return cls(root=root, package_name=package_name, features=tuple(map(str, features)))

    @property
    def python(self) -> Path:
        return self.root / ".venv" / "bin" / "python"

    @property
    def env_prefix(self) -> str:
        """The prefix of the service's settings variables (from the package name)."""
        return f"{self.package_name.upper()}_"

    @property
    def environment_var(self) -> str:
        """The settings variable that selects production mode (env prefix from the slug)."""
        return f"{self.env_prefix}ENVIRONMENT"

    def settings_env(self, settings: Mapping[str, str]) -> dict[str, str]:
        """Service settings named without the prefix, as the environment variables it reads."""
        return {self.env_prefix + name: value for name, value in settings.items()}


def create_environment(project: Project) -> None:
    """Create the project's virtualenv with `uv sync` (the caller checks it is missing)."""
    # An activated Bulwark venv must not leak into the project's own uv sync.
    env = {
        k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"}
    }
    run_step(["uv", "sync"], cwd=project.root, env=env, timeout=SYNC_TIMEOUT_S)
    if not project.python.exists():
        raise ServiceError(f"`uv sync` in {project.root} made no .venv/bin/python")


def runtime_versions(project: Project) -> dict[str, str]:
    """Versions on the servers' side: both run this interpreter with these packages."""
    script = (
        "import sys, importlib.metadata as m; "
        "print(sys.version.split()[0], m.version('fastapi'), m.version('uvicorn'))"
    )
    out = run_step([str(project.python), "-c", script], cwd=project.root, timeout=STEP_TIMEOUT_S)
    python, fastapi, uvicorn = out.split()
    return {"python": python, "fastapi": fastapi, "uvicorn": uvicorn}


@contextmanager
def database(project: Project) -> Iterator[dict[str, str]]:
    """Yield the extra environment the service needs for its database, migrated.

    An explicit DATABASE_URL wins and is inherited as is. Otherwise the project's embedded
    PostgreSQL is started with `scripts/devdb.py url`, and stopped on exit only if it was not
    already running: a developer's `make dev` database is left alone.
    """
    if "postgres" not in project.features or "DATABASE_URL" in os.environ:
        yield {}
        return
    python = str(project.python)
    was_running = _postgres_running(project.root / ".data")
    try:
        out = run_step(
            [python, "scripts/devdb.py", "url"], cwd=project.root, timeout=STEP_TIMEOUT_S
        )
        lines = out.strip().splitlines()
        if not lines:
            raise ServiceError("`scripts/devdb.py url` printed no URL")
        extra = {"DATABASE_URL": lines[-1].strip()}
        run_step(
            [python, "-m", f"{project.package_name}.db.migrate"],
            cwd=project.root,
            env={**os.environ, **extra},
            timeout=STEP_TIMEOUT_S,
        )
        yield extra
    finally:
        if not was_running:
            run_step([python, "scripts/devdb.py", "stop"], cwd=project.root, timeout=STEP_TIMEOUT_S)


_SEED = """\
import asyncio, os
import asyncpg

async def main():
    connection = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        print(await connection.fetchval(
            "INSERT INTO items (name, description) VALUES ($1, $2) RETURNING id",
            "bench item", "read by the db-read and cached-read scenarios"))
    finally:
        await connection.close()

asyncio.run(main())
"""


def seed_item(project: Project, extra_env: Mapping[str, str]) -> str:
    """Insert one item into the migrated database (`extra_env` names it); its id."""
    out = run_step(
        [str(project.python), "-c", _SEED],
        cwd=project.root,
        env={**os.environ, **extra_env},
        timeout=STEP_TIMEOUT_S,
    )
    lines = out.strip().splitlines()
    if not lines or not lines[-1].isdigit():
        raise ServiceError(f"seeding the bench item printed no id: {out!r}")
    return lines[-1]


def _postgres_running(data_dir: Path) -> bool:
    """Whether a PostgreSQL under `data_dir` is alive, judged by its postmaster.pid.

    Reads the server's own lock file rather than asking devdb.py, so it holds whatever
    layout the project keeps under .data/; a stale file from a crash names a dead PID.
    """
    if not data_dir.is_dir():
        return False
    for pid_file in data_dir.rglob("postmaster.pid"):
        try:
            pid = int(pid_file.read_text(encoding="utf-8").split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            continue
        return True
    return False


def run_step(
    command: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a one-shot project command; its stdout, or ServiceError with the output's tail."""
    shown = " ".join(command)
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"`{shown}` took longer than {timeout:.0f} s") from exc
    except FileNotFoundError as exc:
        raise ServiceError(f"`{shown}`: {exc.strerror}: {exc.filename}") from exc
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-TAIL_LINES:])
        raise ServiceError(f"`{shown}` exited with {done.returncode}:\n{output}")
    return done.stdout


def tail(log: Path) -> str:
    """The last lines of a server's log, for an error message."""
    lines = log.read_bytes().decode(errors="replace").strip().splitlines()
    return "\n".join(lines[-TAIL_LINES:]) or "(no output)"
