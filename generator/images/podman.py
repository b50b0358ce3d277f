"""A thin podman runner: build, run hardened, inspect. Subprocess calls, no podman library: the
CLI is the interface this machine's podman (Debian's 4.3) and every later one keep stable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# What .ci/bootstrap installs and writes; named in every refusal so the fix is one command away.
REMEDY = (
    "run .ci/bootstrap as root (it installs podman, buildah, runc and mmdebstrap with apt and "
    "writes /etc/containers/containers.conf with [containers] default_ulimits = [] and "
    '[engine] cgroup_manager = "cgroupfs", runtime = "runc")'
)
TOOLS = ("podman", "runc", "mmdebstrap")
TIMEOUT_S = 600.0
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Where a host PostgreSQL's socket is bind-mounted, inside the /tmp tmpfs the manifests declare:
# the embedded server's socket directory is its 0700 data directory, which uid 10001 cannot enter.
SOCKET_DIR = "/tmp"


class ContainersUnavailable(RuntimeError):
    """This machine cannot build or run containers; the message says why and what to install."""


def _which(name: str) -> str | None:
    # runc and mmdebstrap live in /usr/sbin, which a non-login PATH may lack.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


class Podman:
    """podman with the settings this host needs: runc (crun fails on hybrid cgroups) under
    cgroupfs, and host networking (no netavark/CNI setup is needed for it)."""

    def __init__(self) -> None:
        missing = [name for name in TOOLS if _which(name) is None]
        if missing:
            raise ContainersUnavailable(f"{', '.join(missing)} not found: {REMEDY}")
        self.executable = str(_which("podman"))
        self.runtime = str(_which("runc"))

    def command(self, *args: str) -> list[str]:
        return [self.executable, "--runtime", self.runtime, "--cgroup-manager", "cgroupfs", *args]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(*args), capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and done.returncode:
            raise subprocess.CalledProcessError(
                done.returncode, done.args, output=done.stdout, stderr=done.stderr
            )
        return done

    def label(self, image: str, name: str) -> str | None:
        """The image's label `name`, or None when the image or the label is missing."""
        found = self("image", "inspect", image, check=False)
        if found.returncode:
            return None
        labels = json.loads(found.stdout)[0].get("Labels") or {}
        value = labels.get(name)
        return str(value) if value is not None else None

    def build(self, context: Path, dockerfile: Path, tag: str) -> str:
        """Build with no registry access (every base image is local); return the build log.

        Docker's image format keeps the HEALTHCHECK (OCI's has none). The build steps trust
        what this machine trusts: where the package index is reached through a proxy with its
        own CA, only the host's bundle has it. The mounts exist only while a step runs; the
        image keeps its own bundle.
        """
        with tempfile.TemporaryDirectory(prefix="bulwark-build-") as tmp:
            # uv's own roots otherwise; this makes it read the system bundle mounted below.
            uv_config = Path(tmp) / "uv.toml"
            uv_config.write_text("native-tls = true\n", encoding="utf-8")
            bundle = os.environ.get("SSL_CERT_FILE", HOST_CA_BUNDLE)
            return self(
                "build", "--pull=never", "--network=host", "--format=docker",
                f"--volume={bundle}:{HOST_CA_BUNDLE}:ro",
                f"--volume={uv_config}:/etc/uv/uv.toml:ro",
                "-f", str(dockerfile), "-t", tag, str(context),
            ).stdout  # fmt: skip

    def size(self, image: str) -> int:
        return int(self("image", "inspect", "--format={{.Size}}", image).stdout)

    def run_hardened(
        self,
        image: str,
        *,
        name: str,
        env: Mapping[str, str],
        tmpfs: Sequence[str] = (),
        volumes: Sequence[str] = (),
        command: Sequence[str] = (),
        detach: bool = True,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run as the generated compose file and Kubernetes manifests do (`hardened`)."""
        mode = "--detach" if detach else "--rm"
        flags = hardened(name=name, env=env, tmpfs=tmpfs, volumes=volumes)
        return self("run", mode, *flags, image, *command, check=check)


def hardened(
    *,
    name: str,
    env: Mapping[str, str],
    tmpfs: Sequence[str] = (),
    volumes: Sequence[str] = (),
) -> list[str]:
    """`podman run` flags for uid 10001, a read-only root, tmpfs only where given, every
    capability dropped and no privilege escalation, on the host's network."""
    return [
        *("--name", name, "--network=host", "--user", "10001:10001", "--read-only"),
        # podman mounts its own tmpfs on /tmp, /var/tmp and /run under --read-only; Docker
        # and Kubernetes do not, so only the tmpfs the manifests declare are mounted.
        "--read-only-tmpfs=false",
        *("--cap-drop=ALL", "--security-opt=no-new-privileges"),
        *(f"--tmpfs={path}" for path in tmpfs),
        *(f"--volume={volume}" for volume in volumes),
        *(f"--env={key}={value}" for key, value in env.items()),
    ]


def database_in_container(url: str, inside_dir: str = SOCKET_DIR) -> tuple[str, list[str]]:
    """A host PostgreSQL URL as the container reaches it, and the bind mount that makes it
    reachable: a unix socket is mounted into `inside_dir`, a TCP address is used as it is."""
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if not socket_dir.startswith("/"):
        return url, []  # TCP: --network=host reaches it as it is
    pg_socket = next(Path(socket_dir).glob(".s.PGSQL.*"))
    inside = parts._replace(query=f"host={inside_dir}").geturl()
    return inside, [f"{pg_socket}:{inside_dir}/{pg_socket.name}"]


def preflight(podman: Podman, image: str) -> None:
    """Run `image`'s `/uv --version` hardened; raise ContainersUnavailable with the reason.

    The real check: podman can be installed and still fail to start a container (crun on
    hybrid cgroups, a default nproc ulimit the kernel refuses).
    """
    tried = podman(
        "run", "--rm", "--network=host", "--read-only", "--user", "10001:10001",
        "--cap-drop=ALL", image, "/uv", "--version",
        check=False,
    )  # fmt: skip
    if tried.returncode:
        raise ContainersUnavailable(
            f"podman cannot start a container here ({tried.stderr.strip()[-500:]}): {REMEDY}"
        )
