"""Start and stop the servers under test: a generated project and the bare baseline.

Both sides run as `taskset -c 0 <project's python> -m uvicorn ... <same flags>`, so the one
difference a load test sees is the app. Every server is a context manager: it is stopped
(SIGTERM, then SIGKILL after a bound) however the block exits, KeyboardInterrupt included.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HOST = "127.0.0.1"
SERVER_CPU = 0
UVICORN_FLAGS = (
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
)
BASELINE_APP = Path(__file__).with_name("baseline_app.py")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Bounds for the one-shot project commands: an environment install, the embedded database.
SYNC_TIMEOUT_S = 900.0
STEP_TIMEOUT_S = 180.0
_TAIL_LINES = 30

# urllib would send even 127.0.0.1 through an http_proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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
        # Absolute: commands run with the project as their working directory.
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
        # Absolute: project commands run with the project as their working directory.
        return cls(
            root=root.resolve(), package_name=package_name, features=tuple(map(str, features))
        )

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
        return f"{self.package_name.upper()}_ENVIRONMENT"


@dataclass(frozen=True, slots=True)
class RunningServer:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def check_alive(self) -> None:
        """Raise if the server died under load, rather than report a run against nothing."""
        if self.process.poll() is not None:
            raise ServiceError(
                f"{self.name} exited with {self.process.returncode} during the run:\n"
                + _tail(self.log)
            )


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


def service(
    project: Project, extra_env: Mapping[str, str], *, workers: int = 1, name: str = "service"
) -> AbstractContextManager[RunningServer]:
    """The generated service in production mode; `name` labels its log and errors (a scenario
    may run it as its own baseline with other settings)."""
    env = {**os.environ, **extra_env, project.environment_var: "prod"}
    app_args = [f"{project.package_name}.main:app"]
    return serve(name, app_args, project=project, env=env, workers=workers)


def baseline(
    project: Project,
    app: Path = BASELINE_APP,
    extra_env: Mapping[str, str] | None = None,
    *,
    workers: int = 1,
) -> AbstractContextManager[RunningServer]:
    """The bare app, on the project's interpreter so fastapi/uvicorn versions match; a database
    scenario's baseline gets the service's database through `extra_env`."""
    app_args = ["--app-dir", str(app.parent), f"{app.stem}:app"]
    env = {**os.environ, **(extra_env or {})}
    return serve("baseline", app_args, project=project, env=env, workers=workers)


@contextmanager
def serve(
    name: str,
    app_args: Sequence[str],
    *,
    project: Project,
    env: Mapping[str, str],
    workers: int = 1,
) -> Iterator[RunningServer]:
    """Run uvicorn on SERVER_CPU until /health answers 200; stop it when the block exits.

    More than one worker runs under uvicorn's supervisor, as `--workers` does in production.
    """
    port = free_port()
    command = [
        "taskset",
        "-c",
        str(SERVER_CPU),
        str(project.python),
        "-m",
        "uvicorn",
        *app_args,
        "--host",
        HOST,
        "--port",
        str(port),
        *UVICORN_FLAGS,
        *(["--workers", str(workers)] if workers > 1 else []),
    ]
    with (
        tempfile.TemporaryDirectory(prefix=f"bulwark-{name}-") as tmp,
        spawn(
            name, command, port=port, log=Path(tmp) / "server.log", cwd=project.root, env=env
        ) as server,
    ):
        yield server


@contextmanager
def spawn(
    name: str,
    command: Sequence[str],
    *,
    port: int,
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[RunningServer]:
    """Start `command` (a server that will answer on `port`) with its output in `log`, wait
    until it is ready, and stop it, whatever spawned, when the block exits."""
    with log.open("ab") as log_file:
        # Own session: a terminal's Ctrl-C reaches the harness, which then stops the server
        # in order, instead of racing it.
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(name=name, port=port, process=process, log=log)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_process(process)


def free_port() -> int:
    """A port the kernel just handed out for 127.0.0.1, free again once this returns."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(server: RunningServer) -> None:
    url = server.url("/health")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServiceError(
                f"{server.name} exited with {server.process.returncode} before it was ready:\n"
                + _tail(server.log)
            )
        try:
            with _DIRECT.open(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except OSError:  # refused while starting up; URLError and HTTPError are OSErrors
            pass
        time.sleep(0.05)
    raise ServiceError(
        f"{server.name}: no 200 from {url} within {READY_TIMEOUT_S:.0f} s:\n" + _tail(server.log)
    )


def fetch_json(
    server: RunningServer,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> Any:
    """GET `path` from the server (never through a proxy) and decode its JSON body."""
    request = urllib.request.Request(server.url(path), headers=dict(headers or {}))
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            return json.load(response)
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        raise ServiceError(f"{server.name}: GET {path} failed: {exc}") from exc


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, every thread's included, in seconds."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat").read_text(encoding="ascii"))


def stat_cpu_s(stat: str, ticks_per_s: int | None = None) -> float:
    """utime + stime from the text of /proc/PID/stat, in seconds.

    Parsed by hand: two fields of one kernel line need no library (psutil is not a dependency
    of the harness). The command name (field 2) is in parentheses and may hold spaces or ')',
    so fields are counted after the last ')', where utime and stime (14, 15) are the 12th
    and 13th.
    """
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / (ticks_per_s or os.sysconf("SC_CLK_TCK"))


def threads_cpu_s(pid: int) -> float:
    """Time on CPU of the process's live threads, in seconds, to the nanosecond.

    /proc/PID/stat counts 10 ms ticks, ±0.05 % of a core over 20 s: too coarse for a 0.2 %
    cost. Each thread's schedstat (its first field: ns on CPU) is exact, but a thread that
    exits between two readings is lost, so this suits idle windows, not loaded runs.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(FileNotFoundError):  # a thread that exited while listed
            total += int((task / "schedstat").read_text(encoding="ascii").split()[0])
    return total / 1e9


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait a bound, then SIGKILL; a second Ctrl-C while waiting kills at once."""
    if process.poll() is not None:
        return
    try:
        _signal_group(process, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # taskset execs the server, so the group is the server and anything it spawned.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


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
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise ServiceError(f"`{shown}` exited with {done.returncode}:\n{output}")
    return done.stdout


def _tail(log: Path) -> str:
    lines = log.read_bytes().decode(errors="replace").strip().splitlines()
    return "\n".join(lines[-_TAIL_LINES:]) or "(no output)"
