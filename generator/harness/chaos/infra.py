"""What `bulwark chaos` breaks: the service as production runs it, its embedded PostgreSQL and
a redis-server of its own.

The service runs as `python -m <package>`, the entry point the systemd unit and the container
use: it installs the graceful-shutdown timeout, the exit status 0 after a drain and, with
WORKERS > 1, uvicorn's supervisor that replaces dead workers; `uvicorn <app>` would not.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from generator.harness import project as proj
from generator.harness import servers

REDIS_INSTALL_HINT = "sudo apt-get install -y redis-server"
_REDIS_START_TIMEOUT_S = 10.0


@contextmanager
def serve_module(
    project: proj.Project,
    settings: Mapping[str, str],
    extra_env: Mapping[str, str],
    *,
    workers: int = 1,
    keep_log: Path | None = None,
) -> Iterator[servers.RunningServer]:
    """`python -m <package>` on the server core in production mode until /health answers.

    `settings` are named without the env prefix; `extra_env` is passed as is (DATABASE_URL,
    REDIS_URL). Stopped (SIGTERM, then SIGKILL) when the block exits, if still running; its
    output is then copied to `keep_log`, if given.
    """
    port = servers.free_port()
    prefix = project.env_prefix
    with tempfile.TemporaryDirectory(prefix="bulwark-chaos-") as tmp:
        own = {
            "ENVIRONMENT": "prod",
            "HOST": servers.HOST,
            "PORT": str(port),
            "WORKERS": str(workers),
            **settings,
        }
        if "metrics" in project.features:
            # Wiped at every start: a private one, so a concurrent run's numbers stay whole.
            own["METRICS_MULTIPROC_DIR"] = str(Path(tmp) / "metrics")
        env = {**os.environ, **extra_env, **{prefix + name: value for name, value in own.items()}}
        command = [
            "taskset",
            "-c",
            str(servers.SERVER_CPU),
            str(project.python),
            "-m",
            project.package_name,
        ]
        log = Path(tmp) / "server.log"
        try:
            with servers.spawn(
                "service", command, port=port, log=log, cwd=project.root, env=env
            ) as server:
                yield server
        finally:
            if keep_log is not None:
                keep_log.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, keep_log)


# --- embedded PostgreSQL (the project's scripts/devdb.py) ---------------------------------------


def postgres_stop(project: proj.Project) -> None:
    """Stop the project's embedded PostgreSQL (fast shutdown: sessions are cut), keep its data."""
    proj.run_step(
        [str(project.python), "scripts/devdb.py", "stop"],
        cwd=project.root,
        timeout=proj.STEP_TIMEOUT_S,
    )


def postgres_start(project: proj.Project, cpus: Iterable[int]) -> None:
    """Start it again on the same data and socket; returns once it accepts connections.

    On `cpus`: the harness itself is pinned to wrk's core by then, and the server must not
    inherit that.
    """
    proj.run_step(
        [*_on(cpus), str(project.python), "scripts/devdb.py", "url"],
        cwd=project.root,
        timeout=proj.STEP_TIMEOUT_S,
    )


def _on(cpus: Iterable[int]) -> list[str]:
    """A command prefix running it on `cpus` (none: wherever the caller runs)."""
    chosen = ",".join(map(str, cpus))
    return ["taskset", "-c", chosen] if chosen else []


# --- redis-server ----------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the harness's own on a free loopback port, nothing persisted; on
    `cpus`, not on the core the harness pinned itself to."""

    def __init__(self, cpus: Iterable[int] = ()) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise proj.ServiceError(f"redis-server not found; install it: {REDIS_INSTALL_HINT}")
        self.executable = executable
        self.port = servers.free_port()
        self.cpus = tuple(cpus)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{servers.HOST}:{self.port}/0"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def start(self) -> None:
        """Start (or, after `kill()`, restart empty) on this port; returns once it answers."""
        self.process = subprocess.Popen(
            [
                *_on(self.cpus),
                self.executable,
                *("--bind", servers.HOST, "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--loglevel", "warning"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _REDIS_START_TIMEOUT_S
        while self.command(b"PING") != b"+PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise proj.ServiceError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as in a crash or an OOM kill."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def command(self, inline: bytes) -> bytes:
        """One inline command's first reply line (e.g. b"+PONG", b":12"); b"" when no answer."""
        try:
            with socket.create_connection((servers.HOST, self.port), timeout=0.5) as sock:
                sock.sendall(inline + b"\r\n")
                return sock.recv(256).split(b"\r\n", 1)[0]
        except OSError:
            return b""

    def key_count(self) -> int:
        reply = self.command(b"DBSIZE")
        return int(reply[1:]) if reply.startswith(b":") else 0
