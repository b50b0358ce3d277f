"""The container scenarios of `bulwark loadtest`: `container-health` and `container-db-read`.

Each mirrors a scenario (its path, data and settings) with the generated image, built from the
project's own Dockerfile and run hardened as its compose file runs it, as the measured side,
and the very same service outside the container as the baseline: both run the image's command
(`python -m <package>`) with the compose file's environment, pinned to the server core. The
ratio is then what the container costs, nothing else.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from generator.harness import procfs, servers
from generator.harness.load.scenario import Bench, Scenario
from generator.harness.project import NotAProjectError, Project, ServiceError
from generator.images import (
    ContainersUnavailable,
    Podman,
    database_in_container,
    ensure_base_images,
    hardened,
)

DOCKERFILE = "deploy/docker/Dockerfile"
COMPOSE = "deploy/docker/compose.yaml"
TARGET_RATIO = 0.95
# What `--container` alone mirrors, where DEST has the features.
DEFAULT_MIRRORED = ("health", "db-read")


@dataclass(frozen=True, slots=True)
class ContainerServer(servers.RunningServer):
    """The service in its container: `process` is the foreground `podman run`, `pid` the
    container's first process as the host sees it."""

    pid: int

    def cpu_s(self) -> float:
        """CPU time of the container's processes, read on the host like any server's (the
        podman client and conmon only relay, so they are left out)."""
        return procfs.tree_cpu_s(self.pid)


@dataclass(frozen=True, slots=True)
class InContainer(Scenario):
    """A mirrored scenario with the service in its container against the same service
    outside it (`mirrors` prepares the data and has the path and settings)."""

    mirrors: Scenario | None = None

    @property
    def original(self) -> Scenario:
        if self.mirrors is None:
            raise ValueError(f"{self.name} mirrors no scenario")
        return self.mirrors

    def unavailable(self, project: Project) -> str | None:
        if not (project.root / DOCKERFILE).is_file():
            return f"{project.root} was generated without the docker target (no {DOCKERFILE})"
        try:
            Podman()
        except ContainersUnavailable as exc:
            return str(exc)
        return self.original.unavailable(project)

    def prepare(self, bench: Bench) -> str:
        return self.original.prepare(bench)

    def baseline_server(self, bench: Bench) -> AbstractContextManager[servers.RunningServer]:
        return outside(bench.project, service_env(bench, self.service_settings))

    def service_server(self, bench: Bench) -> AbstractContextManager[servers.RunningServer]:
        return in_container(bench, service_env(bench, self.service_settings))


def compose_app(project: Project) -> dict[str, Any]:
    """The compose file's `app` service: its environment and tmpfs are the container's."""
    compose = yaml.safe_load((project.root / COMPOSE).read_text(encoding="utf-8"))
    app: dict[str, Any] = compose["services"]["app"]
    return app


def service_env(bench: Bench, settings: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """What both sides run with: the compose file's environment, then the scenario's, on a
    port of their own (host networking: the compose file's 8000 may be taken)."""
    compose_env = {
        key: str(value)
        for key, value in compose_app(bench.project)["environment"].items()
        # Its URLs name the compose stack's own hosts; the bench's database stands in.
        if not key.endswith("_URL")
    }
    port = {f"{bench.project.env_prefix}PORT": str(servers.free_port())}
    return compose_env | bench.service_env(settings) | port


def _port(project: Project, env: Mapping[str, str]) -> int:
    return int(env[f"{project.env_prefix}PORT"])


@contextmanager
def outside(project: Project, env: Mapping[str, str]) -> Iterator[servers.RunningServer]:
    """The image's command on the host, in the project's own environment, on the server core."""
    command = [
        "taskset", "-c", str(servers.SERVER_CPU), str(project.python), "-m", project.package_name,
    ]  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="bulwark-outside-") as tmp,
        servers.spawn(
            "outside",
            command,
            port=_port(project, env),
            log=Path(tmp) / "server.log",
            cwd=project.root,
            env={**os.environ, **env},
        ) as server,
    ):
        yield server


def build_image(podman: Podman, project: Project) -> str:
    """The project's image from its own Dockerfile, unchanged (layers cached between runs)."""
    dockerfile = project.root / DOCKERFILE
    python = (project.root / ".python-version").read_text(encoding="utf-8").strip()
    image = f"localhost/bulwark-loadtest-{project.package_name.replace('_', '-')}:latest"
    ensure_base_images(podman, dockerfile, python)
    podman.build(project.root, dockerfile, image)
    return image


@contextmanager
def in_container(bench: Bench, env: Mapping[str, str]) -> Iterator[ContainerServer]:
    """The image run hardened as the compose file runs it, pinned to the server core, against
    the bench's database; removed however the block exits."""
    project = bench.project
    try:
        podman = Podman()
        image = build_image(podman, project)
    except ContainersUnavailable as exc:
        raise ServiceError(str(exc)) from exc
    except subprocess.CalledProcessError as exc:
        raise ServiceError(
            f"building {project.root / DOCKERFILE} failed:\n{exc.stderr[-2000:]}"
        ) from exc
    inside = dict(env)
    volumes: list[str] = []
    if "DATABASE_URL" in inside:
        inside["DATABASE_URL"], volumes = database_in_container(inside["DATABASE_URL"])
    name = f"bulwark-loadtest-{os.getpid()}"
    flags = hardened(name=name, env=inside, tmpfs=compose_app(project)["tmpfs"], volumes=volumes)
    command = podman.command("run", "--rm", f"--cpuset-cpus={servers.SERVER_CPU}", *flags, image)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bulwark-container-") as tmp,
            servers.spawn(
                "container", command, port=_port(project, env), log=Path(tmp) / "log"
            ) as server,
        ):
            pid = int(podman("inspect", "--format={{.State.Pid}}", name).stdout)
            yield ContainerServer(server.name, server.port, server.process, server.log, pid)
    finally:
        podman("rm", "--force", "--time=0", name, check=False)


def mirror(scenario: Scenario) -> InContainer:
    """`scenario` with the service in its container, against the same service outside it."""
    return InContainer(
        f"container-{scenario.name}",
        f"{scenario.path}: the service in its hardened container vs the same service outside it",
        scenario.path,
        features=scenario.features,
        service_settings=scenario.service_settings,
        target_ratio=TARGET_RATIO,
        target_wording="container / outside rps",
        mirrors=scenario,
    )


def default_mirrored(dest: Path, scenarios: Mapping[str, Scenario]) -> list[str]:
    """The scenarios `--container` without `--scenario` mirrors: those of DEFAULT_MIRRORED
    that DEST's features allow (all of them when DEST is no project: the runner says why)."""
    try:
        features = set(Project.load(dest).features)
    except NotAProjectError:
        return list(DEFAULT_MIRRORED)
    return [name for name in DEFAULT_MIRRORED if set(scenarios[name].features) <= features]
