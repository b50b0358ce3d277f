"""The container scenarios of the load test: the service in its hardened container against the
same service outside it (container-health, container-db-read, `--container`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import copier
import pytest
from conftest import REPO_ROOT
from test_loadtest import HAVE_LOAD_TOOLS, load_rendered_sample, write_project
from typer.testing import CliRunner

from generator.cli import app
from generator.harness.load import report
from generator.harness.load.container import DOCKERFILE, default_mirrored
from generator.harness.load.scenarios import SCENARIOS
from generator.harness.project import Project
from generator.images import ContainersUnavailable, Podman

NAMES = ("container-health", "container-db-read")


def test_each_mirrors_its_scenario_with_the_same_path_data_and_settings() -> None:
    for name, original in zip(NAMES, ("health", "db-read"), strict=True):
        mirrored, source = SCENARIOS[name], SCENARIOS[original]
        assert (mirrored.path, mirrored.features) == (source.path, source.features)
        assert mirrored.service_settings == source.service_settings
    # db-read's item cache stays off inside the container too.
    assert ("CACHE_ITEMS_TTL_S", "0") in SCENARIOS["container-db-read"].service_settings


def test_the_target_is_095_of_the_same_service_outside() -> None:
    for name in NAMES:
        assert report.verdict({"name": name, "ratio": 0.96}).met is True
        assert report.verdict({"name": name, "ratio": 0.94}).met is False
        failed = report.verdict({"name": name, "ratio": None, "failed": "service: 5% 503"})
        assert failed.met is False


def test_a_project_without_the_docker_target_cannot_run_them(tmp_path: Path) -> None:
    project = Project.load(write_project(tmp_path, features=["postgres"]))
    for name in NAMES:
        reason = SCENARIOS[name].unavailable(project)
        assert reason is not None
        assert f"without the docker target (no {DOCKERFILE})" in reason


def test_container_alone_mirrors_health_and_db_read_where_the_features_allow(
    tmp_path: Path,
) -> None:
    with_db = write_project(tmp_path / "db", features=["postgres"])
    without = write_project(tmp_path / "bare", features=[])
    assert default_mirrored(with_db, SCENARIOS) == ["health", "db-read"]
    assert default_mirrored(without, SCENARIOS) == ["health"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--container", "--all"], "--all already runs the container scenarios"),
        (["--container", "--scenario", "nginx"], "unknown scenario container-nginx"),
    ],
)
def test_container_flag_names_each_scenarios_twin(
    tmp_path: Path, args: list[str], said: str
) -> None:
    result = CliRunner().invoke(app, ["loadtest", str(tmp_path), *args])
    assert result.exit_code == 2
    assert said in " ".join(result.output.split())


@pytest.fixture(scope="session")
def docker_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sample with postgres and the docker target, rendered from this working tree."""
    if not HAVE_LOAD_TOOLS:
        pytest.skip("needs wrk, taskset and uv")
    try:
        Podman()
    except ContainersUnavailable as exc:
        pytest.fail(f"containers cannot run on this machine: {exc}", pytrace=False)
    dest = tmp_path_factory.mktemp("sample") / "bench-container"
    data = {"project_slug": "bench-container", "targets": ["docker"], "features": ["postgres"]}
    copier.run_copy(str(REPO_ROOT), dest, data=data, defaults=True, vcs_ref="HEAD", quiet=True)
    # The image's build mounts uv.lock; the harness makes .venv, and with it the lock, later.
    subprocess.run(["uv", "lock", "--quiet"], cwd=dest, check=True, timeout=600)
    return dest


@pytest.mark.slow
@pytest.mark.load
def test_container_scenarios_on_a_rendered_sample(docker_sample: Path, tmp_path: Path) -> None:
    """Both run end to end through the built image; the floor is a tripwire, the 0.95 target
    is `make bench`'s."""
    printed, document = load_rendered_sample(docker_sample, list(NAMES), 2, tmp_path)
    by_name = {entry["name"]: entry for entry in document["scenarios"]}
    assert set(by_name) == set(NAMES)
    for entry in by_name.values():
        # Only 200s were sent back and counted, on both sides.
        assert entry["expected_statuses"] == [200]
        assert set(entry["statuses"]) == set(entry["baseline_statuses"]) == {"200"}, printed
        assert entry["unexpected"] == entry["baseline_unexpected"] == 0, printed
        # The container's processes were found on the host and their CPU read.
        assert entry["cpu_us_per_request"] > 0, printed
        assert entry["baseline_cpu_us_per_request"] > 0, printed
        assert entry["ratio"] >= 0.5, printed
    assert by_name["container-db-read"]["path"][len("/items/") :].isdigit()
