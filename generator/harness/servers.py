"""Start and stop the servers under test: a generated project and a bare app beside it.

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

from generator.harness import procfs
from generator.harness.apps import BASELINE
from generator.harness.project import Project, ServiceError, tail

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
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

# urllib would send even 127.0.0.1 through an http_proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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
                + tail(self.log)
            )

    def cpu_s(self) -> float:
        """CPU time of the server's whole process tree so far (workers too), in seconds."""
        return procfs.tree_cpu_s(self.process.pid)


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
    app: Path = BASELINE,
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
                + tail(server.log)
            )
        try:
            with _DIRECT.open(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except OSError:  # refused while starting up; URLError and HTTPError are OSErrors
            pass
        time.sleep(0.05)
    raise ServiceError(
        f"{server.name}: no 200 from {url} within {READY_TIMEOUT_S:.0f} s:\n" + tail(server.log)
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
