"""The generated image, built with podman from the project as rendered and run as its compose
file and Kubernetes manifests run it (uid 10001, read-only root, tmpfs only where they mount
one, every capability dropped, no privilege escalation), against a real PostgreSQL and Redis
on the host. The base images are local stand-ins (docs/testing.md, "Containers")."""

import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import httpx
import pytest
import yaml
from conftest import DEPLOY_SLUG, REPO_ROOT

from generator.images import (
    Podman,
    database_in_container,
    ensure_base_images,
    python_versions,
)
from generator.presets import get_preset

pytestmark = pytest.mark.slow

PACKAGE = DEPLOY_SLUG.replace("-", "_")
PREFIX = PACKAGE.upper() + "_"
# The full preset on copier's default Python; the bare service (the docker target alone) on the
# oldest Python offered, so both ends of the version range get a stand-in and a build.
CASES: dict[str, dict[str, object]] = {
    "full": get_preset("full").answers(),
    "bare": {"targets": ["docker"], "features": [], "python_version": python_versions()[-1]},
}
READY_TIMEOUT_S = 60.0
LOCK_WAIT_S = 60.0


@dataclass
class Built:
    case: str
    root: Path
    image: str
    features: list[str]
    build_s: float

    def manifest(self, path: str) -> dict[str, object]:
        loaded = yaml.safe_load((self.root / path).read_text(encoding="utf-8"))
        assert isinstance(loaded, dict)
        return loaded


@pytest.fixture(scope="module", params=list(CASES))
def built(request: pytest.FixtureRequest, podman: Podman) -> Iterator[Built]:
    case: str = request.param
    answers = {"project_slug": DEPLOY_SLUG, **CASES[case]}
    # Outside pytest's temp root: the embedded PostgreSQL runs as its own user and needs to
    # reach its data directory (tests/conftest.py, private_dir).
    with tempfile.TemporaryDirectory(prefix=f"bulwark-container-{case}-") as tmp:
        root = Path(tmp) / "svc"
        copier.run_copy(
            str(REPO_ROOT), root, data=answers, defaults=True, vcs_ref="HEAD", quiet=True
        )
        subprocess.run(["uv", "lock", "--quiet"], cwd=root, check=True, timeout=600)
        python = (root / ".python-version").read_text(encoding="utf-8").strip()
        dockerfile = root / "deploy/docker/Dockerfile"
        ensure_base_images(podman, dockerfile, python)
        image = f"localhost/bulwark-test-{case}:latest"
        started = time.monotonic()
        podman.build(root, dockerfile, image)
        features = answers["features"]
        assert isinstance(features, list)
        yield Built(case, root, image, features, time.monotonic() - started)


def _app_service(built: Built) -> dict[str, Any]:
    compose = built.manifest("deploy/docker/compose.yaml")
    service: dict[str, Any] = compose["services"]["app"]  # type: ignore[index]
    return service


@pytest.fixture(scope="module")
def backing(built: Built) -> Iterator[dict[str, str]]:
    """DATABASE_URL (an empty database) and REDIS_URL on the host, where compose passes them."""
    with host_backing(built.root, _app_service(built)["environment"]) as found:
        yield found


@contextmanager
def host_backing(root: Path, wanted: Collection[str]) -> Iterator[dict[str, str]]:
    """Of DATABASE_URL and REDIS_URL, those in `wanted`: the project's embedded PostgreSQL
    (an empty database) and a redis-server on loopback, stopped on exit."""
    found: dict[str, str] = {}
    redis: subprocess.Popen[bytes] | None = None
    try:
        if "DATABASE_URL" in wanted:
            url = _project_run(root, "scripts/devdb.py", "url").strip().splitlines()[-1]
            found["DATABASE_URL"] = url
        if "REDIS_URL" in wanted:
            port = _free_port()
            redis = subprocess.Popen(
                [_need("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", ""],
                stdout=subprocess.DEVNULL,
            )
            found["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        yield found
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=10)
        if "DATABASE_URL" in found:
            _project_run(root, "scripts/devdb.py", "stop")


def _need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} not found: .ci/bootstrap installs it"
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _project_run(root: Path, *args: str) -> str:
    """Run a script with the generated project's own environment (its dev dependencies)."""
    done = subprocess.run(
        _project_python(root, *args), cwd=root, env=_project_env(), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _project_python(root: Path, *args: str) -> list[str]:
    return ["uv", "run", "--project", str(root), "--frozen", "--quiet", "python", *args]


def _project_env() -> dict[str, str]:
    # This repo's activated venv or database must not leak into the project's own.
    return {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "DATABASE_URL"}}


def _migration_job(built: Built) -> tuple[list[str], list[str]]:
    """The Kubernetes migration Job's command and the paths it mounts an emptyDir on."""
    job = built.manifest("deploy/k8s/base/migrate-job.yaml")
    spec = job["spec"]["template"]["spec"]  # type: ignore[index]
    container = spec["containers"][0]
    empty = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
    mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty]
    return container["command"], mounts


@pytest.fixture(scope="module")
def migrated(built: Built, backing: dict[str, str], podman: Podman) -> str | None:
    """The migration Job's run on the empty database: None when it exits 0, else its output."""
    if "DATABASE_URL" not in backing:
        return None
    command, tmpfs = _migration_job(built)
    url, volumes = database_in_container(backing["DATABASE_URL"])
    ran = podman.run_hardened(
        built.image, name=f"bulwark-test-migrate-{os.getpid()}", env={"DATABASE_URL": url},
        tmpfs=tmpfs, volumes=volumes, command=command, detach=False, check=False,
    )  # fmt: skip
    return None if ran.returncode == 0 else ran.stdout + ran.stderr


@dataclass
class Running:
    name: str
    port: int
    cold_start_s: float
    stop_grace_s: float


@pytest.fixture(scope="module")
def app(
    built: Built, backing: dict[str, str], migrated: str | None, podman: Podman
) -> Iterator[Running]:
    assert migrated is None, f"the migration Job failed:\n{migrated}"
    service = _app_service(built)
    volumes: list[str] = []
    env = {**service["environment"], **backing}
    if "DATABASE_URL" in backing:
        env["DATABASE_URL"], volumes = database_in_container(backing["DATABASE_URL"])
    # Host networking: a free port instead of 8000, which another service here may hold.
    port = _free_port()
    env[f"{PREFIX}PORT"] = str(port)
    name = f"bulwark-test-{built.case}-{os.getpid()}"
    started = time.monotonic()
    podman.run_hardened(built.image, name=name, env=env, tmpfs=service["tmpfs"], volumes=volumes)
    try:
        deadline = started + READY_TIMEOUT_S
        while _status(port, "/ready") != 200:
            assert time.monotonic() < deadline, podman("logs", name, check=False).stderr
            time.sleep(0.05)
        grace = float(str(service["stop_grace_period"]).removesuffix("s"))
        yield Running(name, port, time.monotonic() - started, grace)
    finally:
        podman("rm", "--force", "--time=0", name, check=False)


def _status(port: int, path: str) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code
    except httpx.TransportError:
        return None


# ---- the checks, in the order a deployment meets them -----------------------------------------


def test_image_runs_as_uid_10001_with_a_healthcheck(built: Built, podman: Podman) -> None:
    image = json.loads(podman("image", "inspect", built.image).stdout)[0]
    assert image["Config"]["User"] == "10001:10001"
    assert image["Healthcheck"]["Test"][0] == "CMD"
    size_mb = podman.size(built.image) / 1e6
    print(f"\n{built.case}: image {size_mb:.0f} MB, built in {built.build_s:.0f} s")


def test_migration_job_succeeds_on_an_empty_database(built: Built, migrated: str | None) -> None:
    if "postgres" not in built.features:
        pytest.skip("no database in this answer set")
    assert migrated is None, migrated


def test_health_and_ready_answer_200(app: Running) -> None:
    assert _status(app.port, "/health") == 200
    assert _status(app.port, "/ready") == 200
    print(f"\ncold start (container start -> /ready 200): {app.cold_start_s:.2f} s")


def test_the_images_own_healthcheck_passes(app: Running, podman: Podman) -> None:
    checked = podman("healthcheck", "run", app.name, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.fixture(scope="module")
def engine_writes(built: Built, podman: Podman) -> str:
    """What podman itself changes in a container of this image that runs nothing (mount
    points for /etc/hosts and /etc/resolv.conf): the service may change nothing more."""
    name = f"bulwark-test-idle-{built.case}-{os.getpid()}"
    podman.run_hardened(built.image, name=name, env={}, tmpfs=["/tmp"], command=["true"])
    try:
        podman("wait", name)
        return podman("diff", name).stdout
    finally:
        podman("rm", "--force", name, check=False)


def test_nothing_is_written_outside_the_tmpfs(
    app: Running, podman: Podman, engine_writes: str
) -> None:
    for path in ("/health", "/ready", "/docs", "/nope"):
        _status(app.port, path)
    assert podman("diff", app.name).stdout == engine_writes


# Holds an exclusive lock on the items table until stdin closes, so a request that reads it
# stays in flight; says "locked", then "blocked" once a backend waits on the lock.
HOLD_ITEMS_LOCK = """
import asyncio, os, sys
import asyncpg

async def main():
    connection = await asyncpg.connect(os.environ["DATABASE_URL"])
    async with connection.transaction():
        await connection.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        print("locked", flush=True)
        while not await connection.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
            await asyncio.sleep(0.02)
        print("blocked", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def _line(process: subprocess.Popen[str]) -> str:
    """The process's next output line, or "" when none comes within LOCK_WAIT_S."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], LOCK_WAIT_S)
    return process.stdout.readline().strip() if ready else ""


def test_sigterm_drains_a_request_in_flight_and_exits_0(
    built: Built, backing: dict[str, str], app: Running, podman: Podman, engine_writes: str
) -> None:
    in_flight: list[httpx.Response] = []
    holder = None
    if "postgres" in built.features:
        holder = subprocess.Popen(
            _project_python(built.root, "-c", HOLD_ITEMS_LOCK),
            env={**_project_env(), "DATABASE_URL": backing["DATABASE_URL"]},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert _line(holder) == "locked"
        url = f"http://127.0.0.1:{app.port}/items"
        request = threading.Thread(target=lambda: in_flight.append(httpx.get(url, timeout=30)))
        request.start()
        assert _line(holder) == "blocked", f"GET /items did not wait on the lock: {in_flight}"
    started = time.monotonic()
    stop = subprocess.Popen(
        podman.command("stop", f"--time={app.stop_grace_s:.0f}", app.name),
        stdout=subprocess.DEVNULL,
    )
    # The listener closes first: once /health is refused, SIGTERM has been handled.
    while _status(app.port, "/health") is not None:
        assert time.monotonic() - started < app.stop_grace_s
        time.sleep(0.02)
    if holder is not None:
        holder.communicate("", timeout=30)
        request.join(timeout=30)
        assert [response.status_code for response in in_flight] == [200]
    stop.wait(timeout=app.stop_grace_s + 15)
    elapsed = time.monotonic() - started
    exit_code = podman("inspect", "--format={{.State.ExitCode}}", app.name).stdout.strip()
    assert exit_code == "0", podman("logs", app.name, check=False).stderr
    assert elapsed < app.stop_grace_s
    assert podman("diff", app.name).stdout == engine_writes
    print(f"\nSIGTERM -> exit 0 in {elapsed:.2f} s")


def test_rebuild_after_a_source_change_reuses_the_dependency_layer(
    built: Built, podman: Podman
) -> None:
    # A change no earlier run made, so the source layer cannot come from the cache.
    init = built.root / "src" / PACKAGE / "__init__.py"
    init.write_text(f"{init.read_text(encoding='utf-8')}\n# {uuid.uuid4()}\n", encoding="utf-8")
    rebuilt = built.image.replace(":latest", ":rebuilt")
    started = time.monotonic()
    log = podman.build(built.root, built.root / "deploy/docker/Dockerfile", rebuilt)
    blocks = log.split("STEP ")[1:]
    steps = {block.splitlines()[0]: "Using cache" in block for block in blocks}
    # The layers this build made (every stage's) go, so runs do not pile them up; a FROM
    # step names a base image, which stays.
    made = [
        layer
        for block in blocks
        if "Using cache" not in block and ": FROM " not in block.splitlines()[0]
        for layer in re.findall(r"^--> (\w+)$", block, re.M)
    ]
    podman("image", "rm", "--force", rebuilt, *reversed(made), check=False)
    dependencies = next(s for s in steps if "--no-install-project" in s)
    project = next(s for s in steps if s.split(": ", 1)[-1].startswith("COPY src"))
    assert steps[dependencies], log
    assert not steps[project], log  # the change reached the build
    print(f"\nrebuild after a src/ change: {time.monotonic() - started:.1f} s")
