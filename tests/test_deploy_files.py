"""Deployment files render only for the targets chosen, and the real tools accept them."""

import shutil
import subprocess
from pathlib import Path

import copier
import pytest
import yaml
from conftest import REPO_ROOT

SLUG = "orders-api"
FILES_BY_TARGET = {
    "docker": ["deploy/docker/Dockerfile", "deploy/docker/compose.yaml", ".dockerignore"],
    "kubernetes": [
        "deploy/k8s/base/kustomization.yaml",
        "deploy/k8s/base/deployment.yaml",
        "deploy/k8s/base/service.yaml",
    ],
    "systemd": [f"deploy/systemd/{SLUG}.service", f"deploy/systemd/{SLUG}.env.example"],
    "nginx": [f"deploy/nginx/{SLUG}.conf"],
}


def _render(dest: Path, targets: list[str], features: list[str]) -> Path:
    data = {"project_slug": SLUG, "targets": targets, "features": features}
    copier.run_copy(str(REPO_ROOT), dest, data=data, defaults=True, vcs_ref="HEAD", quiet=True)
    return dest


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _render(tmp_path_factory.mktemp("all") / "svc", list(FILES_BY_TARGET), ["postgres"])


@pytest.mark.parametrize("target", FILES_BY_TARGET)
def test_only_the_chosen_targets_files_render(target: str, tmp_path: Path) -> None:
    needs = ["docker", target] if target == "kubernetes" else [target]
    dest = _render(tmp_path / "svc", needs, [])
    rendered = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    for name, files in FILES_BY_TARGET.items():
        for file in files:
            assert (file in rendered) == (name in needs), file


def test_kustomize_builds_the_base(everything: Path) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed: install it, e.g. apt-get install kubectl"
    built = subprocess.run(
        [kubectl, "kustomize", str(everything / "deploy/k8s/base")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds = {document["kind"] for document in yaml.safe_load_all(built)}
    assert kinds == {"Deployment", "Service"}


def test_nginx_accepts_the_site(everything: Path, tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    site = everything / f"deploy/nginx/{SLUG}.conf"
    config = tmp_path / "nginx.conf"
    config.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{ access_log off; include {site}; }}\n",
        encoding="utf-8",
    )
    checked = subprocess.run(
        [nginx, "-t", "-q", "-c", str(config), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_systemd_verifies_the_unit(everything: Path) -> None:
    unit = everything / f"deploy/systemd/{SLUG}.service"
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    # The install paths (/opt/..., /etc/...) do not exist on a build machine.
    absent_install_path = ("No such file or directory", "is not executable")
    problems = [
        line
        for line in verified.stderr.splitlines()
        if line.strip() and not any(reason in line for reason in absent_install_path)
    ]
    assert problems == [], verified.stderr
