"""Deployment files render only for the targets chosen, and every YAML file passes yamllint."""

import subprocess
from collections.abc import Callable
from pathlib import Path

import copier
import pytest
from conftest import DEPLOY_SLUG, REPO_ROOT, deploy_answer_sets, venv_tool

FILES_BY_TARGET = {
    "docker": [
        "deploy/docker/Dockerfile",
        "deploy/docker/compose.yaml",
        ".dockerignore",
        ".yamllint.yaml",
    ],
    "kubernetes": [
        "deploy/k8s/base/kustomization.yaml",
        "deploy/k8s/base/deployment.yaml",
        "deploy/k8s/base/service.yaml",
        "deploy/k8s/overlays/dev/kustomization.yaml",
        "deploy/k8s/overlays/prod/kustomization.yaml",
        ".yamllint.yaml",
    ],
    "systemd": [
        f"deploy/systemd/{DEPLOY_SLUG}.service",
        f"deploy/systemd/{DEPLOY_SLUG}.env.example",
    ],
    "nginx": [f"deploy/nginx/{DEPLOY_SLUG}.conf"],
}


def _render(dest: Path, targets: list[str], features: list[str]) -> Path:
    data = {"project_slug": DEPLOY_SLUG, "targets": targets, "features": features}
    copier.run_copy(str(REPO_ROOT), dest, data=data, defaults=True, vcs_ref="HEAD", quiet=True)
    return dest


@pytest.mark.parametrize("target", FILES_BY_TARGET)
def test_only_the_chosen_targets_files_render(target: str, tmp_path: Path) -> None:
    needs = ["docker", target] if target == "kubernetes" else [target]
    dest = _render(tmp_path / "svc", needs, [])
    rendered = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    expected = {file for name in needs for file in FILES_BY_TARGET[name]}
    for files in FILES_BY_TARGET.values():
        for file in files:
            assert (file in rendered) == (file in expected), file


@pytest.mark.parametrize("answers", deploy_answer_sets())
def test_every_yaml_file_passes_yamllint(
    answers: str, deploy_sample: Callable[[str], Path]
) -> None:
    root = deploy_sample(answers)
    linted = subprocess.run(
        [venv_tool("yamllint"), "--strict", "--format", "parsable", "."],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    # The project's own config is what `make manifests-check` uses; it must not hide the
    # deployment files.
    listed = subprocess.run(
        [venv_tool("yamllint"), "--list-files", "."],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"./deploy/docker/compose.yaml", "./deploy/k8s/base/deployment.yaml"} <= set(listed)


def test_yamllint_config_still_finds_problems(
    deploy_sample: Callable[[str], Path], tmp_path: Path
) -> None:
    """The project's relaxations (line length 100, no "---") leave real errors reported."""
    root = deploy_sample("no-features")
    planted = tmp_path / "deploy.yaml"
    text = (root / "deploy/k8s/base/service.yaml").read_text()
    planted.write_text(text.replace("type: ClusterIP", "type: ClusterIP\n  type: NodePort"))
    linted = subprocess.run(
        [venv_tool("yamllint"), "--config-file", str(root / ".yamllint.yaml"), str(planted)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode != 0
    assert "duplication of key" in linted.stdout
