"""The load-test harness: usage errors, the project contract, and real wrk runs end to end.

Fast tests drive the contract with stand-ins (a fake devdb.py, an interpreter without
uvicorn). The `slow`/`load` tests run wrk against a fake generated project sharing one
session venv with fastapi + uvicorn[standard], and, once the template has a service, against
a real rendered sample.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from rich.progress import Progress

from generator.cli import main
from generator.harness import servers
from generator.harness.load import runner
from generator.harness.load.runner import run_loadtest
from generator.harness.load.scenario import RUNS, Bench, Outcome, Side, pairs
from generator.harness.load.scenarios import SCENARIOS
from generator.harness.project import Project, ServiceError, database
from generator.harness.wrk import WrkResult

REPO_ROOT = Path(__file__).resolve().parent.parent
HAVE_LOAD_TOOLS = all(shutil.which(tool) for tool in ("wrk", "taskset", "uv"))
needs_load_tools = pytest.mark.skipif(not HAVE_LOAD_TOOLS, reason="needs wrk, taskset and uv")

HEALTH_APP = """\
import os

from fastapi import FastAPI

# The harness's contract: production mode, and the migrated database's URL when postgres is on.
if os.environ.get("DEMO_SVC_ENVIRONMENT") != "prod":
    raise RuntimeError("DEMO_SVC_ENVIRONMENT is not prod")
if os.environ.get("EXPECT_DATABASE_URL", "") != os.environ.get("DATABASE_URL", ""):
    raise RuntimeError("DATABASE_URL is not the one devdb.py printed")

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
"""

# Answers 429 past the first requests unless the default per-client limit is turned off, as
# the template's limiter does to wrk's one address.
RATE_LIMITED_APP = """\
import os

from fastapi import FastAPI
from fastapi.responses import JSONResponse

LIMITED = os.environ.get("DEMO_SVC_RATE_LIMIT_DEFAULT", "1000/minute") != ""
app = FastAPI()
served = 0


@app.get("/health", response_model=None)
async def health() -> dict[str, str] | JSONResponse:
    global served
    served += 1
    if LIMITED and served > 50:
        return JSONResponse({"detail": "Too Many Requests"}, status_code=429)
    return {"status": "ok"}
"""

# Stand-ins for the template's scripts/devdb.py and <pkg>.db.migrate: they log each call.
FAKE_DEVDB = """\
import sys
from pathlib import Path

with Path("calls.log").open("a") as log:
    log.write(f"devdb {sys.argv[1]}\\n")
if sys.argv[1] == "url":
    print("starting embedded PostgreSQL")
    print("postgresql://bench@127.0.0.1:5999/bench")
"""
FAKE_MIGRATE = """\
import os
import sys
from pathlib import Path

with Path("calls.log").open("a") as log:
    log.write(f"migrate {os.environ['DATABASE_URL']}\\n")
sys.exit(int(os.environ.get("FAKE_MIGRATE_EXIT", "0")))
"""
FAKE_URL = "postgresql://bench@127.0.0.1:5999/bench"

ProjectFactory = Callable[..., Path]


def write_project(
    root: Path, *, features: list[str], main: str = HEALTH_APP, venv: Path | None = None
) -> Path:
    """A directory shaped like a generated project, with `demo_svc` importable from its root."""
    package = root / "demo_svc"
    (package / "db").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "db" / "__init__.py").write_text("")
    (package / "db" / "migrate.py").write_text(FAKE_MIGRATE)
    (package / "main.py").write_text(main)
    (root / "scripts").mkdir()
    (root / "scripts" / "devdb.py").write_text(FAKE_DEVDB)
    answers = {"_src_path": str(REPO_ROOT), "package_name": "demo_svc", "features": features}
    (root / ".copier-answers.yml").write_text(yaml.safe_dump(answers))
    if venv is None:
        # An interpreter with neither fastapi nor uvicorn: enough for the database steps.
        bin_dir = root / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (bin_dir / "python").chmod(0o755)
    else:
        (root / ".venv").symlink_to(venv, target_is_directory=True)
    return root


def calls(project: Path) -> list[str]:
    log = project / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def quiet_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, color_system=None), out


def refused(dest: Path, scenarios: list[str], *, duration: float = 1) -> tuple[int, str]:
    """`run_loadtest` as a usage error stops it: the exit code and what it printed."""
    console, out = quiet_console()
    code = run_loadtest(
        dest,
        scenarios,
        duration=duration,
        connections=1,
        json_path=None,
        min_ratio=None,
        console=console,
    )
    return code, out.getvalue()


def result(rps: float, p99_ms: float, errors: int = 0) -> WrkResult:
    return WrkResult(
        requests=int(rps),
        duration_s=1.0,
        rps=rps,
        p50_ms=p99_ms / 2,
        p75_ms=p99_ms / 2,
        p90_ms=p99_ms,
        p99_ms=p99_ms,
        non_2xx_3xx=errors,
    )


def counted(statuses: dict[int, int], p99_ms: float = 4.0, expect: int = 200) -> WrkResult:
    """A 1 s run whose answers status.lua counted."""
    total = sum(statuses.values())
    return WrkResult(
        requests=total,
        duration_s=1.0,
        rps=float(total),
        p50_ms=p99_ms / 2,
        p75_ms=p99_ms / 2,
        p90_ms=p99_ms,
        p99_ms=p99_ms,
        non_2xx_3xx=sum(n for s, n in statuses.items() if s >= 400),
        statuses=statuses,
        expected=statuses.get(expect, 0),
    )


@pytest.fixture(autouse=True)
def _no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DATABASE_URL from the caller's shell would bypass the embedded-database path."""
    monkeypatch.delenv("DATABASE_URL", raising=False)


# --- usage errors (exit 2) -------------------------------------------------------------------


def test_unknown_scenario_lists_the_known_ones(tmp_path: Path) -> None:
    code, printed = refused(tmp_path, ["health", "nope"])
    assert code == 2
    assert "unknown scenario nope; known: routed, routed-50" in printed


@needs_load_tools
def test_a_plain_directory_is_not_a_project(tmp_path: Path) -> None:
    code, printed = refused(tmp_path, ["health"])
    assert code == 2
    assert "is not a generated project" in printed


def test_missing_wrk_prints_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "wrk" else real_which(tool))
    code, printed = refused(write_project(tmp_path, features=[]), ["health"])
    assert code == 2
    assert "sudo apt-get install -y wrk" in printed


def test_sub_second_duration_is_refused(tmp_path: Path) -> None:
    code, printed = refused(tmp_path, ["health"], duration=0.4)
    assert code == 2
    assert "at least 1 s" in printed


# --- figures ---------------------------------------------------------------------------------


def test_side_reports_the_median_run_and_sums_errors() -> None:
    side = Side(runs=(result(900, 9.0, errors=1), result(1000, 3.0), result(800, 5.0, errors=2)))
    assert (side.median.rps, side.median.p99_ms) == (900, 9.0)
    assert side.errors == 3


def bench(root: Path, *, no_rate_limit: bool = False) -> Bench:
    project = Project.load(root)
    return Bench(project, {}, 1, 1, quiet_progress(), no_rate_limit=no_rate_limit)


def quiet_progress() -> Progress:
    return Progress(console=quiet_console()[0])


def test_refusals_fail_the_scenario_with_the_rate_limit_as_cause(tmp_path: Path) -> None:
    """wrk is one client: the default per-client limit's 429s are no throughput."""
    health = SCENARIOS["health"]
    clean = Side(runs=(counted({200: 10_000}),) * 3)
    refused = Side(runs=(counted({200: 900, 429: 9_100}),) * 3)
    setup = bench(write_project(tmp_path, features=["rate_limit"]))
    failure = health.failure(Outcome(health, clean, refused), setup)
    assert failure is not None
    assert failure.startswith("service: 91.0% of answers were not 200 (27,300 x 429); ")
    assert "429s: the default per-client rate limit applies to the load generator" in failure
    assert "pass --no-rate-limit or set DEMO_SVC_RATE_LIMIT_DEFAULT=" in failure
    assert Outcome(health, clean, refused, failure=failure).ratio is None
    # The throughput that is reported is the 200s alone.
    assert refused.median.good_rps == 900


def test_either_side_over_a_thousandth_fails_and_under_passes(tmp_path: Path) -> None:
    health = SCENARIOS["health"]
    setup = bench(write_project(tmp_path, features=[]))
    clean = Side(runs=(counted({200: 10_000}),))
    few = Side(runs=(counted({200: 9_990, 500: 10}),))  # exactly 0.1 %
    many = Side(runs=(counted({200: 9_980, 500: 20}),))
    assert health.failure(Outcome(health, few, few), setup) is None
    failure = health.failure(Outcome(health, many, clean), setup)
    assert failure is not None
    assert failure.startswith("baseline: 0.2% of answers were not 200 (20 x 500); 500s:")
    closed = Side(runs=(replace(counted({200: 9_000}), read_errors=900),))
    failure = health.failure(Outcome(health, clean, closed), setup) or ""
    assert "(900 read errors); socket errors: the server closed" in failure
    slow = Side(runs=(replace(counted({200: 9_000}), timeout_errors=30),))
    failure = health.failure(Outcome(health, clean, slow), setup) or ""
    assert "(30 timeout errors); timeouts: answers took over wrk's 2 s" in failure


def test_429s_with_the_limit_off_name_the_routes_own_limit(tmp_path: Path) -> None:
    health = SCENARIOS["health"]
    setup = bench(write_project(tmp_path, features=["rate_limit"]), no_rate_limit=True)
    refused = Side(runs=(counted({200: 500, 429: 500}),))
    clean = Side(runs=(counted({200: 1000}),))
    failure = health.failure(Outcome(health, clean, refused), setup) or ""
    assert "a route's own limit applies" in failure
    assert "--no-rate-limit" not in failure


def test_no_rate_limit_clears_the_default_limit_on_service_sides_only(tmp_path: Path) -> None:
    root = write_project(tmp_path, features=["rate_limit"])
    env = bench(root, no_rate_limit=True).service_env((("CACHE_ITEMS_TTL_S", "0"),))
    assert env == {"DEMO_SVC_RATE_LIMIT_DEFAULT": "", "DEMO_SVC_CACHE_ITEMS_TTL_S": "0"}
    assert "DEMO_SVC_RATE_LIMIT_DEFAULT" not in bench(root).service_env(())


def test_each_ratio_comes_with_its_spread_over_the_pairs() -> None:
    baseline = Side(
        runs=(counted({200: 1000}, 4.0), counted({200: 2000}, 4.0), counted({200: 1000}, 4.0)),
        cpu_s=(0.1, 0.2, 0.1),  # 100 µs a request
    )
    service = Side(
        runs=(counted({200: 900}, 5.0), counted({200: 1900}, 4.0), counted({200: 1000}, 6.0)),
        cpu_s=(0.099, 0.19, 0.125),  # 110, 100 and 125 µs a request
    )
    assert service.cpu_us == pytest.approx(110.0)
    spread = pairs(baseline, service)
    assert spread["rps"] == {"median": 0.95, "min": 0.9, "max": 1.0}
    assert spread["p99"] == {"median": 1.25, "min": 1.0, "max": 1.5}
    # CPU as baseline / service: reads like the rps ratio, higher is cheaper.
    assert spread["cpu"] == {"median": 0.9091, "min": 0.8, "max": 1.0}


def test_a_failed_scenario_prints_its_cause_writes_no_ratio_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = SCENARIOS["health"]
    clean = Side(runs=(counted({200: 1000}),) * 3, cpu_s=(0.1,) * 3)
    refused = Side(runs=(counted({200: 100, 429: 900}),) * 3, cpu_s=(0.1,) * 3)

    def measure(*_: object) -> tuple[dict[str, Any], list[Outcome]]:
        outcome = Outcome(health, clean, refused, failure="service: 90.0% ... 429s: the cause")
        return {"cpu_model": "fake"}, [outcome]

    monkeypatch.setattr(runner, "measure", measure)
    console, out = quiet_console()
    json_path = tmp_path / "r.json"
    code = run_loadtest(
        write_project(tmp_path / "svc", features=[]),
        ["health"],
        duration=1,
        connections=1,
        json_path=json_path,
        min_ratio=0.5,
        console=console,
    )
    printed = out.getvalue()
    assert code == 1, printed
    assert "health failed: service: 90.0% ... 429s: the cause" in printed
    assert "failed, no ratio: health" in printed
    (entry,) = json.loads(json_path.read_text())["scenarios"]
    assert entry["ratio"] is None
    assert entry["failed"].endswith("429s: the cause")
    assert entry["statuses"] == {"200": 300, "429": 2700}
    assert entry["error_share"] == 0.9
    assert "pairs" not in entry


def test_repeat_below_one_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["loadtest", str(tmp_path), "--repeat", "0"]) == 2
    console, out = quiet_console()
    code = run_loadtest(
        tmp_path,
        ["health"],
        duration=1,
        connections=1,
        json_path=None,
        min_ratio=None,
        console=console,
        repeat=0,
    )
    assert code == 2
    assert "--repeat must be at least 1" in out.getvalue()


# --- the project contract --------------------------------------------------------------------


def test_a_relative_dest_is_resolved_before_commands_run_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_project(tmp_path, features=[])
    monkeypatch.chdir(root.parent)
    project = Project.load(Path(root.name))
    assert project.python == root / ".venv" / "bin" / "python"


def test_database_is_started_migrated_and_stopped(tmp_path: Path) -> None:
    project = Project.load(write_project(tmp_path, features=["postgres"]))
    with database(project) as extra_env:
        assert extra_env == {"DATABASE_URL": FAKE_URL}
        assert calls(tmp_path) == ["devdb url", f"migrate {FAKE_URL}"]
    assert calls(tmp_path)[-1] == "devdb stop"


def test_a_database_already_running_is_left_running(tmp_path: Path) -> None:
    project = Project.load(write_project(tmp_path, features=["postgres"]))
    pid_file = tmp_path / ".data" / "pgdata" / "postmaster.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{os.getpid()}\n{pid_file.parent}\n")
    with database(project):
        pass
    assert "devdb stop" not in calls(tmp_path)


def test_a_stale_pid_file_does_not_count_as_running(tmp_path: Path) -> None:
    project = Project.load(write_project(tmp_path, features=["postgres"]))
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file = tmp_path / ".data" / "postmaster.pid"
    pid_file.parent.mkdir()
    pid_file.write_text(f"{dead.pid}\n")
    with database(project):
        pass
    assert calls(tmp_path)[-1] == "devdb stop"


def test_failed_migration_still_stops_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MIGRATE_EXIT", "3")
    project = Project.load(write_project(tmp_path, features=["postgres"]))
    with (
        pytest.raises(ServiceError, match="exited with 3"),
        database(project),
    ):
        pytest.fail("the body must not run when migrations fail")
    assert calls(tmp_path) == ["devdb url", f"migrate {FAKE_URL}", "devdb stop"]


def test_an_explicit_database_url_skips_the_embedded_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://prod/db")
    project = Project.load(write_project(tmp_path, features=["postgres"]))
    with database(project) as extra_env:
        assert extra_env == {}
    assert calls(tmp_path) == []


@needs_load_tools
def test_a_server_that_cannot_start_reports_its_output(tmp_path: Path) -> None:
    project = Project.load(write_project(tmp_path, features=[]))
    with (
        pytest.raises(ServiceError, match="No module named uvicorn"),
        servers.service(project, {}),
    ):
        pytest.fail("an interpreter without uvicorn cannot serve")


def test_stop_kills_a_server_that_ignores_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "STOP_TIMEOUT_S", 0.5)
    stubborn = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ready; sleep 30"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert stubborn.stdout is not None
    assert stubborn.stdout.readline() == b"ready\n"  # the trap is set: SIGTERM is ignored
    servers.stop_process(stubborn)
    stubborn.stdout.close()
    assert stubborn.returncode == -9


# --- real load ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One venv with the server stack, shared by every fake project (installing takes time)."""
    if not HAVE_LOAD_TOOLS:
        pytest.skip("needs wrk, taskset and uv")
    venv = tmp_path_factory.mktemp("server-venv") / ".venv"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(["uv", "venv", "-q", "--python", sys.executable, str(venv)], env=env, check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        ["uv", "pip", "install", "-q", "--python", python, "fastapi", "uvicorn[standard]"],
        env=env,
        check=True,
        timeout=600,
    )
    return venv


@pytest.fixture
def fake_project(tmp_path: Path, server_venv: Path) -> ProjectFactory:
    def make(*, features: list[str], main: str = HEALTH_APP) -> Path:
        return write_project(tmp_path / "project", features=features, main=main, venv=server_venv)

    return make


def assert_report(report: dict[str, Any]) -> dict[str, Any]:
    """The JSON contract other tools read; returns the one scenario's entry."""
    assert set(report["machine"]) >= {
        "cpu_model",
        "cores",
        "python",
        "platform",
        "wrk_version",
        "date",
    }
    health: dict[str, Any]
    (health,) = report["scenarios"]
    assert set(health) >= {
        "name",
        "rps",
        "p50_ms",
        "p99_ms",
        "errors",
        "baseline_rps",
        "baseline_p99_ms",
        "ratio",
    }
    assert health["name"] == "health"
    assert health["rps"] > 0
    assert health["baseline_rps"] > 0
    assert health["errors"] == 0
    assert health["baseline_errors"] == 0
    assert 0 < health["p50_ms"] <= health["p99_ms"]
    assert 0 < health["baseline_p50_ms"] <= health["baseline_p99_ms"]
    assert health["ratio"] == pytest.approx(health["rps"] / health["baseline_rps"], rel=1e-3)
    return health


@pytest.mark.slow
@pytest.mark.load
def test_fake_projectend_to_end(
    fake_project: ProjectFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides measured, the database contract honoured, the JSON written."""
    monkeypatch.setenv("EXPECT_DATABASE_URL", FAKE_URL)
    project = fake_project(features=["postgres"])
    console, out = quiet_console()
    json_path = tmp_path / "out" / "load.json"
    code = run_loadtest(
        project,
        ["health"],
        duration=2,
        connections=32,
        json_path=json_path,
        min_ratio=0.5,
        console=console,
    )
    printed = out.getvalue()
    print(printed)
    assert code == 0, printed
    health = assert_report(json.loads(json_path.read_text()))
    assert len(health["runs"]["baseline"]) == len(health["runs"]["service"]) == RUNS
    assert health["ratio"] >= 0.5  # both sides are bare FastAPI: a tripwire, not a target
    assert calls(project) == ["devdb url", f"migrate {FAKE_URL}", "devdb stop"]
    assert "baseline" in printed
    assert "service" in printed


@pytest.mark.slow
@pytest.mark.load
def test_ratio_below_the_floor_exits_1(fake_project: ProjectFactory) -> None:
    console, out = quiet_console()
    code = run_loadtest(
        fake_project(features=[]),
        ["health"],
        duration=1,
        connections=8,
        json_path=None,
        min_ratio=100.0,
        console=console,
    )
    assert code == 1
    assert "below --min-ratio 100.0: health" in out.getvalue()


@pytest.mark.slow
@pytest.mark.load
def test_service_that_fails_to_start_exits_1_with_its_stderr(
    fake_project: ProjectFactory,
) -> None:
    console, out = quiet_console()
    broken = 'raise RuntimeError("refusing to start: no SECRET_KEY")\n'
    code = run_loadtest(
        fake_project(features=[], main=broken),
        ["health"],
        duration=1,
        connections=8,
        json_path=None,
        min_ratio=None,
        console=console,
    )
    printed = out.getvalue()
    assert code == 1
    assert "service exited with" in printed
    assert "refusing to start: no SECRET_KEY" in printed


@pytest.mark.slow
@pytest.mark.load
def test_refusals_fail_the_run_until_the_rate_limit_is_off(
    fake_project: ProjectFactory, tmp_path: Path
) -> None:
    """The same service: a ratio of 429s fails loudly; with --no-rate-limit it is measured."""
    project = fake_project(features=["rate_limit"], main=RATE_LIMITED_APP)
    console, out = quiet_console()
    options: dict[str, Any] = {"duration": 1, "connections": 8, "min_ratio": None}
    code = run_loadtest(project, ["health"], json_path=None, console=console, **options)
    printed = out.getvalue()
    print(printed)
    assert code == 1, printed
    assert "health failed: service: " in printed
    assert "pass --no-rate-limit or set DEMO_SVC_RATE_LIMIT_DEFAULT=" in printed

    console, out = quiet_console()
    json_path = tmp_path / "r.json"
    code = run_loadtest(
        project,
        ["health"],
        json_path=json_path,
        console=console,
        repeat=2,
        no_rate_limit=True,
        **options,
    )
    printed = out.getvalue()
    print(printed)
    assert code == 0, printed
    (entry,) = json.loads(json_path.read_text())["scenarios"]
    assert list(entry["statuses"]) == list(entry["baseline_statuses"]) == ["200"]
    assert entry["unexpected"] == entry["baseline_unexpected"] == 0
    assert len(entry["runs"]["service"]) == len(entry["runs"]["baseline"]) == 2
    assert entry["cpu_us_per_request"] > 0
    assert entry["baseline_cpu_us_per_request"] > 0
    assert set(entry["pairs"]) == {"rps", "p50", "p99", "cpu"}
    assert entry["pairs"]["rps"]["min"] <= entry["pairs"]["rps"]["median"]


def render_sample(tmp_path_factory: pytest.TempPathFactory, slug: str, features: list[str]) -> Path:
    """A real sample rendered from this repo's working tree (HEAD includes uncommitted
    template changes; None would check out the latest tag once one exists)."""
    import copier

    dest = tmp_path_factory.mktemp("sample") / slug
    data = {"projectslug": slug, "targets": [], "features": features}
    copier.run_copy(str(REPO_ROOT), dest, data=data, defaults=True, vcs_ref="HEAD", quiet=True)
    return dest


@needs_load_tools
@pytest.mark.parametrize(
    ("features", "scenario", "missing"),
    [
        ([], "db-read", "postgres"),
        (["postgres"], "cached-read", "cache"),
        (["timeout"], "overload", "load_shedding"),
    ],
)
def test_a_scenario_needing_a_missing_feature_is_a_usage_error(
    tmp_path: Path, features: list[str], scenario: str, missing: str
) -> None:
    code, printed = refused(write_project(tmp_path, features=features), [scenario])
    assert code == 2
    assert f"scenario {scenario} needs the {missing} feature" in printed


def load_rendered_sample(
    project: Path, scenarios: list[str], duration: float, tmp_path: Path
) -> tuple[str, dict[str, Any]]:
    """Run `bulwark loadtest` on a rendered sample at 32 connections; its output and report."""
    console, out = quiet_console()
    json_path = tmp_path / "load.json"
    code = run_loadtest(
        project,
        scenarios,
        duration=duration,
        connections=32,
        json_path=json_path,
        min_ratio=None,
        console=console,
    )
    printed = out.getvalue()
    print(printed)
    assert code == 0, printed
    report: dict[str, Any] = json.loads(json_path.read_text())
    return printed, report


@pytest.fixture(scope="session")
def sample_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sample rendered from this repo's template, postgres on."""
    if not (REPO_ROOT / "template" / "src").exists():
        pytest.skip("template/src does not exist yet: the template has no service to load-test")
    if not HAVE_LOAD_TOOLS:
        pytest.skip("needs wrk, taskset and uv")
    return render_sample(tmp_path_factory, "bench-svc", ["postgres"])


@pytest.mark.slow
@pytest.mark.load
def test_rendered_sample_against_bare_fastapi(sample_project: Path, tmp_path: Path) -> None:
    """The headline figure, on the real template; 0.5 is a tripwire only."""
    printed, report = load_rendered_sample(sample_project, ["health"], 2, tmp_path)
    health = assert_report(report)
    assert health["ratio"] >= 0.5, printed
