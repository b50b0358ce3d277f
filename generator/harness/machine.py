"""The machine a load runs on: what it must have, how the harness pins itself, what it is.

Shared by `bulwark loadtest` and `bulwark chaos`: both put the servers on SERVER_CPU and wrk
(and the harness's own redraws) on WRK_CPU, so the two never share a core.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from generator.harness import project as proj
from generator.harness import wrk
from generator.harness.servers import SERVER_CPU, UVICORN_FLAGS

WRK_CPU = 1
UV_INSTALL_HINT = "python3 -m pip install uv"
TASKSET_INSTALL_HINT = "sudo apt-get install -y util-linux"


class UsageError(ValueError):
    """The command cannot run as asked (exit 2); the message says what to change."""


def load_project(dest: Path, extra_tools: Sequence[tuple[str, str]] = ()) -> proj.Project:
    """The rendered project at DEST, once the machine can load it: wrk, taskset and
    `extra_tools` ((name, install hint) pairs) installed, and the two CPUs that pin the server
    and wrk apart available. A `UsageError` names what is missing."""
    tools = [("wrk", wrk.INSTALL_HINT), ("taskset", TASKSET_INSTALL_HINT), *extra_tools]
    for tool, hint in tools:
        if shutil.which(tool) is None:
            raise UsageError(f"{tool} not found; install it with: {hint}")
    cpus = {SERVER_CPU, WRK_CPU}
    if not cpus <= os.sched_getaffinity(0):
        raise UsageError(f"needs CPUs {sorted(cpus)} to pin the server and wrk apart")
    try:
        return proj.Project.load(dest)
    except proj.NotAProjectError as exc:
        raise UsageError(str(exc)) from exc


def check_environment(project: proj.Project) -> None:
    """A project without its .venv needs uv to make one."""
    if not project.python.exists() and shutil.which("uv") is None:
        raise UsageError(
            f"{project.root} has no .venv and uv is not found; install it: {UV_INSTALL_HINT}"
        )


def ensure_environment(project: proj.Project, console: Console) -> None:
    if not project.python.exists():
        with console.status(f"creating {project.root}/.venv with uv sync"):
            proj.create_environment(project)


@contextmanager
def on_wrk_core() -> Iterator[tuple[int, ...]]:
    """Pin the harness to wrk's core for the block; yields the CPUs it could use before.

    Its own redraws then share wrk's core and leave the server's alone. Entered only after
    the database starts, so PostgreSQL keeps the default affinity (a restart gets the CPUs
    yielded here).
    """
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    os.sched_setaffinity(0, {WRK_CPU})
    try:
        yield cpus
    finally:
        os.sched_setaffinity(0, cpus)


def info(project: proj.Project) -> dict[str, Any]:
    """Where the figures come from; `python` is the servers' interpreter, not Bulwark's."""
    versions = proj.runtime_versions(project)
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


def line(machine: dict[str, Any]) -> str:
    """`info` in one printable line (rich markup escaped)."""
    return escape(
        f"{machine['cpu_model']}, {machine['cores']} cores · Python {machine['python']} · "
        f"fastapi {machine['fastapi']} · uvicorn {machine['uvicorn']} · {machine['wrk_version']}"
    )


def protocol() -> dict[str, Any]:
    """The pinning and server flags every figure was taken with, for a JSON document."""
    return {"server_cpu": SERVER_CPU, "wrk_cpu": WRK_CPU, "uvicorn_flags": list(UVICORN_FLAGS)}


def _cpu_model() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "unknown"
    for entry in cpuinfo.splitlines():
        key, _, value = entry.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown"
