"""The Dockerfile builds a slim non-root runtime from uv.lock, and hadolint finds nothing;
compose starts dependencies first, gated on their health checks."""

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import deploy_answer_sets, venv_tool

ANSWER_SETS = list(deploy_answer_sets())


def _stages(dockerfile: str) -> dict[str, list[str]]:
    """Instructions per named stage, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            current = stages.setdefault(line.split()[-1], [])
        current.append(line)
    return stages


@pytest.mark.parametrize("answers", ANSWER_SETS)
def test_hadolint_finds_nothing(answers: str, deploy_sample: Callable[[str], Path]) -> None:
    dockerfile = deploy_sample(answers) / "deploy/docker/Dockerfile"
    linted = subprocess.run(
        [venv_tool("hadolint"), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout.strip() == ""


def test_runtime_stage_is_slim_non_root_and_signal_aware(
    deploy_sample: Callable[[str], Path],
) -> None:
    stages = _stages((deploy_sample("all-features") / "deploy/docker/Dockerfile").read_text())
    assert list(stages)[-1] == "runtime"
    builder, runtime = " ".join(stages["builder"]), stages["runtime"]
    assert "uv sync --frozen --no-dev" in builder  # the lock file decides what is installed
    assert runtime[0].startswith("FROM python:")
    assert "-slim" in runtime[0]
    # Only the built venv crosses over: no uv, no build tools, no sources.
    copies = [line for line in runtime if line.startswith("COPY")]
    assert copies == ["COPY --from=builder /app/.venv /app/.venv"]
    assert not any(re.search(r"\b(apt-get|pip|uv|gcc)\b", line) for line in runtime[1:])
    user = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert user
    assert user[-1].split(":")[0] not in {"0", "root"}
    assert "STOPSIGNAL SIGTERM" in runtime
    healthcheck = next(line for line in runtime if line.startswith("HEALTHCHECK"))
    assert "curl" not in healthcheck
    assert "wget" not in healthcheck
    assert "/health" in healthcheck
    cmd = next(line for line in runtime if line.startswith("CMD "))
    assert json.loads(cmd.removeprefix("CMD ")) == ["python", "-m", "orders_api"]


@pytest.mark.parametrize("answers", ANSWER_SETS)
def test_compose_gates_the_app_on_healthy_dependencies(
    answers: str, deploy_sample: Callable[[str], Path]
) -> None:
    features = deploy_answer_sets()[answers]["features"]
    assert isinstance(features, list)
    compose = yaml.safe_load((deploy_sample(answers) / "deploy/docker/compose.yaml").read_text())
    services = compose["services"]
    expected = {"app"}
    if "postgres" in features:
        expected |= {"postgres", "migrate"}
    if "redis" in features:
        expected.add("redis")
    # The local trace viewer: the app never waits for it (spans are dropped while it is away).
    viewer = {"jaeger"} if "tracing" in features else set()
    assert set(services) == expected | viewer
    app = services["app"]
    gates = app.get("depends_on", {})
    assert set(gates) == expected - {"app"}
    for name, gate in gates.items():
        wanted = "service_completed_successfully" if name == "migrate" else "service_healthy"
        assert gate["condition"] == wanted, name
        if wanted == "service_healthy":
            assert services[name]["healthcheck"]["test"], name
    if "postgres" in features:
        assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "DATABASE_URL" in app["environment"]
    if "redis" in features:
        assert app["environment"]["REDIS_URL"].startswith("redis://redis:")
    # Stateful services keep their data in named volumes that the file declares.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in (compose.get("volumes") or {}), f"{name}: {source} is not named"
    assert app["read_only"] is True
    assert app["cap_drop"] == ["ALL"]


def test_hadolint_reads_the_rendered_file(
    deploy_sample: Callable[[str], Path], tmp_path: Path
) -> None:
    """A planted unpinned apt-get install is reported: the clean result above is earned."""
    planted = tmp_path / "Dockerfile"
    text = (deploy_sample("no-features") / "deploy/docker/Dockerfile").read_text()
    planted.write_text(
        text.replace("USER 10001:10001", "RUN apt-get install curl\nUSER 10001:10001")
    )
    linted = subprocess.run(
        [venv_tool("hadolint"), "--no-color", "--format", "json", str(planted)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode != 0
    assert {"DL3008", "DL3014", "DL3015"} <= {
        finding["code"] for finding in json.loads(linted.stdout)
    }
