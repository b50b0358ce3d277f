"""The stand-in images' inputs are read from the template, and a machine without the container
tools is refused with what to install."""

from pathlib import Path

import pytest
from conftest import REPO_ROOT

from generator.images import ContainersUnavailable, Podman, uv_version

TEMPLATE_DOCKERFILE = next((REPO_ROOT / "template/deploy").glob("*docker*/Dockerfile.jinja"))


def test_uv_version_is_the_dockerfiles_build_argument(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("# syntax=docker/dockerfile:1\nARG UV_VERSION=1.2.3\nFROM x\n")
    assert uv_version(dockerfile) == "1.2.3"
    assert uv_version(TEMPLATE_DOCKERFILE).count(".") == 2


def test_a_dockerfile_without_the_uv_version_is_refused(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM ghcr.io/astral-sh/uv:latest AS uv\n")
    with pytest.raises(ValueError, match="ARG UV_VERSION"):
        uv_version(dockerfile)


def test_missing_tools_are_named_with_the_remedy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name, path=None: None)
    expected = r"^podman, runc, mmdebstrap not found: run \.ci/bootstrap as root"
    with pytest.raises(ContainersUnavailable, match=expected):
        Podman()
