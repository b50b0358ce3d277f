"""Containers on a machine with podman but no registry: stand-ins for the generated Dockerfile's
base images, built locally and cached, and a small runner that starts the image hardened."""

from generator.images.base import ensure_base_images, ensure_uv, python_versions, uv_version
from generator.images.podman import (
    ContainersUnavailable,
    Podman,
    database_in_container,
    hardened,
    preflight,
)
from generator.images.systemd import ensure_systemd

__all__ = [
    "ContainersUnavailable",
    "Podman",
    "database_in_container",
    "ensure_base_images",
    "ensure_systemd",
    "ensure_uv",
    "hardened",
    "preflight",
    "python_versions",
    "uv_version",
]
