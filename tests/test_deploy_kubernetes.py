"""Each kustomize overlay builds, validates against the declared Kubernetes version's schemas,
and carries the probes, hardening and shutdown timing of docs/deployment.md."""

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DEPLOY_SLUG, deploy_answer_sets, venv_tool

ANSWER_SETS = list(deploy_answer_sets())
OVERLAYS = ["dev", "prod"]
# PostgreSQL's default max_connections less its 3 superuser_reserved_connections.
POSTGRES_CONNECTIONS = 100 - 3


def kubernetes_version(root: Path) -> str:
    """The version the generated project declares (its Makefile), so both check the same."""
    found = re.search(r"^KUBERNETES_VERSION \?= (\S+)$", (root / "Makefile").read_text(), re.M)
    assert found, "the generated Makefile declares no KUBERNETES_VERSION"
    return found.group(1)


def build(root: Path, overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, (
        "kubectl (which ships kustomize) is needed: apt-get install -y kubectl, "
        "or put a kustomize-capable kubectl on PATH"
    )
    built = subprocess.run(
        [kubectl, "kustomize", str(root / "deploy/k8s/overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for document in documents:
        assert document["kind"] not in kinds, f"two {document['kind']} objects"
        kinds[document["kind"]] = document
    return kinds


def features_of(answers: str) -> list[str]:
    features = deploy_answer_sets()[answers]["features"]
    assert isinstance(features, list)
    return features


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("answers", ANSWER_SETS)
def test_overlay_builds_and_validates_against_the_declared_version(
    answers: str, overlay: str, deploy_sample: Callable[[str], Path], tmp_path: Path
) -> None:
    root = deploy_sample(answers)
    documents = build(root, overlay)
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(yaml.safe_dump_all(documents), encoding="utf-8")
    files = [str(manifest)]
    secret = root / "deploy/k8s/secret.example.yaml"
    features = features_of(answers)
    assert secret.exists() == ("postgres" in features or "redis" in features)
    if secret.exists():
        files.append(str(secret))
    validated = subprocess.run(
        [
            venv_tool("kubernetes-validate"),
            "--strict",
            "--quiet",
            "--kubernetes-version",
            kubernetes_version(root),
            *files,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    expected = {"ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler"}
    expected |= {"PodDisruptionBudget"} | ({"Job"} if "postgres" in features else set())
    assert set(by_kind(documents)) == expected


@pytest.mark.parametrize("answers", ANSWER_SETS)
def test_pod_is_probed_hardened_and_drains_before_the_kill(
    answers: str, deploy_sample: Callable[[str], Path]
) -> None:
    kinds = by_kind(build(deploy_sample(answers), "prod"))
    pod = kinds["Deployment"]["spec"]["template"]
    spec = pod["spec"]
    (app,) = spec["containers"]
    assert app["livenessProbe"]["httpGet"]["path"] == "/health"
    assert app["startupProbe"]["httpGet"]["path"] == "/health"
    assert app["readinessProbe"]["httpGet"]["path"] == "/ready"
    # Readiness reacts faster than liveness: traffic leaves a sick pod before it is restarted.
    readiness, liveness = app["readinessProbe"], app["livenessProbe"]
    assert (
        readiness["periodSeconds"] * readiness["failureThreshold"]
        < liveness["periodSeconds"] * liveness["failureThreshold"]
    )
    assert {"cpu", "memory"} <= set(app["resources"]["requests"])
    assert "memory" in app["resources"]["limits"]
    context = app["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["securityContext"]["runAsUser"] != 0
    assert app["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert spec["terminationGracePeriodSeconds"] > app["lifecycle"]["preStop"]["sleep"]["seconds"]
    spread = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in spread.values():
        assert (
            constraint["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        )
    annotations = pod["metadata"].get("annotations", {})
    if "metrics" in features_of(answers):
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
    else:
        assert "prometheus.io/scrape" not in annotations


@pytest.mark.parametrize("answers", ANSWER_SETS)
def test_service_and_budget_select_the_api_pods_only(
    answers: str, deploy_sample: Callable[[str], Path]
) -> None:
    kinds = by_kind(build(deploy_sample(answers), "prod"))
    api_labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Service": kinds["Service"]["spec"]["selector"],
        "PodDisruptionBudget": kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        "Deployment": kinds["Deployment"]["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector.items() <= api_labels.items(), kind
    if "Job" in kinds:
        job_labels = kinds["Job"]["spec"]["template"]["metadata"]["labels"]
        for kind, selector in selectors.items():
            assert not selector.items() <= job_labels.items(), f"{kind} selects the Job's pod"
        command = kinds["Job"]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[-1] == "orders_api.db.migrate"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_connections_at_max_scale_fit_the_database(
    overlay: str, deploy_sample: Callable[[str], Path]
) -> None:
    kinds = by_kind(build(deploy_sample("postgres"), overlay))
    config = kinds["ConfigMap"]["data"]
    pool_max = int(config["ORDERS_API_POOL_MAX_SIZE"])
    surge = kinds["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert isinstance(surge, int), "a percentage surge makes the peak pod count open-ended"
    pods = kinds["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] + surge
    migration = 1
    assert pods * pool_max + migration <= POSTGRES_CONNECTIONS
    assert kinds["ConfigMap"]["metadata"]["name"].startswith(f"{DEPLOY_SLUG}-config-")
