"""A generated service behind real nginx with its rendered site, as the systemd unit runs it
(2 workers): a worker killed under load costs only the requests it had in flight, and workers
recycled by max-requests cost none. Also runs the project's own `make manifests-check`.

Load runs hold the load lock (conftest), so they never overlap another load test.
"""

import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import copier
import pytest
from conftest import DEPLOY_SLUG, REPO_ROOT, holding_load_lock
from rich.console import Console

from generator.harness import nginx, servers, wrk
from generator.harness import project as proj
from generator.harness.load.runner import run_loadtest
from generator.harness.procfs import established_connections

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(map(shutil.which, ("wrk", "taskset", "uv"))) or nginx.binary() is None,
        reason="needs wrk, taskset, uv and nginx (.ci/bootstrap installs them)",
    ),
]
SERVER_CPU, WRK_CPU = 0, 1


@pytest.fixture(scope="module")
def project() -> Iterator[proj.Project]:
    # Not under pytest's basetemp: any other pytest session starting on the machine resets
    # /tmp/pytest-of-<user> to mode 0700, and the embedded PostgreSQL, which runs as its own
    # user, then PANICs on its data directory.
    with tempfile.TemporaryDirectory(prefix="bulwark-deploy-run-") as tmp:
        yield _rendered(Path(tmp) / "svc")


def _rendered(root: Path) -> proj.Project:
    data = {
        "project_slug": DEPLOY_SLUG,
        "targets": ["docker", "kubernetes", "systemd", "nginx"],
        "features": ["postgres"],
    }
    copier.run_copy(str(REPO_ROOT), root, data=data, defaults=True, vcs_ref="HEAD", quiet=True)
    loaded = proj.Project.load(root)
    proj.create_environment(loaded)
    return loaded


@pytest.fixture(scope="module")
def database(project: proj.Project) -> Iterator[dict[str, str]]:
    with proj.database(project) as extra:
        yield extra


def workers_of(master: int) -> list[int]:
    """uvicorn's worker processes: the master's children started by multiprocessing spawn."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def wait_for_workers(master: int, count: int, timeout_s: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = workers_of(master)
        if len(found) == count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"uvicorn {master} has workers {workers_of(master)}, expected {count}")


def test_project_manifests_check_passes(project: proj.Project) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    environment.pop("VIRTUAL_ENV", None)
    checked = subprocess.run(
        ["make", "manifests-check"],
        cwd=project.root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]
    assert "every deployment file passed" in checked.stdout
    assert "Overall exposure level" in checked.stdout


def test_killing_a_worker_under_load_loses_only_its_in_flight_requests(
    project: proj.Project, database: dict[str, str]
) -> None:
    killed: dict[str, int] = {}

    with (
        holding_load_lock(),
        servers.service(project, database, workers=2) as server,
        nginx.front(project.root, server, cpu=SERVER_CPU) as proxied,
    ):
        master = server.process.pid
        victim = wait_for_workers(master, 2)[0]

        def kill_once(elapsed: float) -> None:
            if elapsed >= 2.0 and not killed:
                killed["in_flight_bound"] = established_connections(victim, server.port)
                os.kill(victim, signal.SIGKILL)
                killed["pid"] = victim

        result = wrk.run_wrk(
            proxied.url("/health"), duration_s=6, connections=32, cpu=WRK_CPU, tick=kill_once
        )
        survivors = wait_for_workers(master, 2)
        proxied.check_alive()

    print(
        f"worker kill under load: {result.requests} requests, {result.rps:.0f} rps, "
        f"{result.errors} failed, bound {killed['in_flight_bound']} connections on the victim"
    )
    assert killed["pid"] not in survivors  # the supervisor replaced it
    assert result.requests > 1000
    assert result.errors <= killed["in_flight_bound"]


def test_recycled_workers_lose_at_most_a_racing_request_each(
    project: proj.Project, database: dict[str, str]
) -> None:
    """`python -m <pkg>` as the systemd unit starts it, each worker recycled after 200-400
    requests. The listening socket stays open in uvicorn's supervisor, so a request that
    arrives while a worker restarts waits for another one. What can fail is a request racing
    the exiting worker's close of a fresh connection (nginx retries only on a reused one, and
    has no other server to try): seen at most once in a run, so bounded by one per recycle."""
    prefix = "ORDERS_API_"
    port = servers.free_port()
    env = {
        **os.environ,
        **database,
        f"{prefix}ENVIRONMENT": "prod",
        f"{prefix}PORT": str(port),
        f"{prefix}WORKERS": "2",
        f"{prefix}LIMIT_MAX_REQUESTS": "200",
        f"{prefix}LIMIT_MAX_REQUESTS_JITTER": "200",
        f"{prefix}LOG_LEVEL": "INFO",
    }
    log = project.root / "recycle.log"
    command = ["taskset", "-c", str(SERVER_CPU), str(project.python), "-m", "orders_api"]
    with (
        holding_load_lock(),
        servers.spawn("service", command, port=port, log=log, cwd=project.root, env=env) as server,
    ):
        first = set(wait_for_workers(server.process.pid, 2))
        with nginx.front(project.root, server, cpu=SERVER_CPU) as proxied:
            result = wrk.run_wrk(proxied.url("/health"), duration_s=6, connections=16, cpu=WRK_CPU)
            proxied.check_alive()
        last = set(wait_for_workers(server.process.pid, 2))

    recycles = log.read_text(errors="replace").count("Maximum request limit of")
    print(f"recycling: {recycles} recycles, {result}")
    assert first.isdisjoint(last)  # both workers were recycled and replaced
    # A request may wait while both workers restart at once (a fresh interpreter imports the
    # app), which wrk reports as its 2 s client timeout: a wait, printed above, not a failure.
    failed = result.connect_errors + result.read_errors + result.write_errors
    failed += result.non_2xx_3xx
    assert failed <= recycles


def test_loadtest_nginx_scenario_reports_through_nginx(
    project: proj.Project, database: dict[str, str], tmp_path: Path
) -> None:
    """`bulwark loadtest --scenario nginx`: both sides behind the project's nginx, 2 workers."""
    out = io.StringIO()
    report_path = tmp_path / "nginx.json"
    with holding_load_lock():
        code = run_loadtest(
            project.root,
            ["nginx"],
            duration=1,
            connections=16,
            json_path=report_path,
            min_ratio=None,
            console=Console(file=out, width=200),
        )
    assert code == 0, out.getvalue()
    (scenario,) = json.loads(report_path.read_text())["scenarios"]
    assert scenario["name"] == "nginx"
    assert (scenario["workers"], scenario["via_nginx"]) == (2, True)
    assert scenario["rps"] > 0
    assert scenario["baseline_rps"] > 0
    assert scenario["errors"] == 0
