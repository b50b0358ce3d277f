"""Stand-ins for the generated Dockerfile's base images, for machines that cannot pull them.

- `ghcr.io/astral-sh/uv:<UV_VERSION>`: `/uv` and `/uvx` from the uv wheel of that version, on
  an empty root, as the real image has them.
- `python:<X.Y>-slim`: a Debian minimal root (mmdebstrap, the Debian release this machine's apt
  reaches) with ca-certificates, netbase, tzdata and the libraries CPython's modules link, and
  a CPython X.Y found on this machine copied under /usr/local, as the official image lays it out.

Each image carries a label with a hash of its recipe (this file, the versions, the packages),
so it is built once per machine and rebuilt only when the recipe changes.
"""

from __future__ import annotations

import hashlib
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

from generator.answers import questions
from generator.images.podman import REMEDY, ContainersUnavailable, Podman

RECIPE_LABEL = "org.bulwark.stand-in.recipe"
# The official slim image's apt packages, then the libraries its stdlib modules link
# (_ssl, _hashlib, _sqlite3, _ctypes, _bz2, _lzma, readline, curses, zlib, _uuid, pyexpat, nis).
DEBIAN_PACKAGES = (
    "ca-certificates", "netbase", "tzdata",
    "libssl3", "libsqlite3-0", "libffi8", "libbz2-1.0", "liblzma5", "libreadline8",
    "libncursesw6", "zlib1g", "libuuid1", "libexpat1", "libnsl2", "libtirpc3",
)  # fmt: skip
# Debian's slim images leave documentation and translations out.
SLIM_EXCLUDED = ("doc", "info", "locale", "man", "groff", "linda", "lintian")
# Left out as the official image leaves them out (tests, static library, GUI toolkit), plus the
# source interpreter's own site-packages: the stand-in starts with an empty one.
_DROPPED = re.compile(
    r"^(test|tests|idle_test|idlelib|tkinter|turtledemo|site-packages|__pycache__)$"
)
_DROPPED_FILES = re.compile(r"^(libpython.*\.a|_tkinter.*\.so|.*\.py[co])$")


def uv_version(dockerfile: Path) -> str:
    """The `ARG UV_VERSION=` default of a rendered Dockerfile."""
    found = re.search(r"^ARG UV_VERSION=(\S+)$", dockerfile.read_text(encoding="utf-8"), re.M)
    if found is None:
        raise ValueError(f"{dockerfile} has no `ARG UV_VERSION=<version>` line")
    return found.group(1)


def python_versions() -> tuple[str, ...]:
    """The Python versions copier.yml offers, so a version added there gets its image."""
    return questions()["python_version"].choices


def ensure_base_images(podman: Podman, dockerfile: Path, python: str) -> list[str]:
    """Build whichever stand-in the rendered `dockerfile` (for Python `python`) needs and this
    machine lacks; return the image references."""
    return [ensure_uv(podman, uv_version(dockerfile)), ensure_python(podman, python)]


def _recipe(*parts: str) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for part in parts:
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:16]


def _run(command: list[str], **kwargs: object) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode:
        raise ContainersUnavailable(
            f"`{' '.join(command)}` failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    return str(done.stdout)


def ensure_uv(podman: Podman, version: str) -> str:
    reference = f"ghcr.io/astral-sh/uv:{version}"
    recipe = _recipe("uv", version, platform.machine())
    if podman.label(reference, RECIPE_LABEL) == recipe:
        return reference
    with tempfile.TemporaryDirectory(prefix="bulwark-uv-image-") as tmp:
        work = Path(tmp)
        # The musllinux wheel holds the static binary the real image ships; pip fetches it.
        _run([
            "uv", "tool", "run", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", f"--platform=musllinux_1_1_{platform.machine()}",
            "--dest", str(work), f"uv=={version}",
        ])  # fmt: skip
        (wheel,) = work.glob("uv-*.whl")
        with zipfile.ZipFile(wheel) as archive, tarfile.open(work / "root.tar", "w") as root:
            for name in ("uv", "uvx"):
                data = archive.read(f"uv-{version}.data/scripts/{name}")
                (work / name).write_bytes(data)
                (work / name).chmod(0o755)
                root.add(work / name, arcname=name)
        podman("image", "rm", "--force", reference, check=False)  # no dangling old build
        podman("import", "--change", f"LABEL {RECIPE_LABEL}={recipe}", str(work / "root.tar"),
               reference)  # fmt: skip
    return reference


def _interpreter(version: str) -> tuple[Path, str]:
    """The install prefix and full version of a CPython `version` on this machine."""
    found = subprocess.run(
        ["uv", "python", "find", "--system", version], capture_output=True, text=True, check=False
    )
    if found.returncode:
        raise ContainersUnavailable(
            f"no CPython {version} on this machine to put in the python:{version}-slim "
            f"stand-in ({found.stderr.strip()}); install it (pyenv install {version})"
        )
    probe = "import sys, platform; print(sys.base_prefix); print(platform.python_version())"
    prefix, full = _run([found.stdout.strip(), "-c", probe]).split()
    return Path(prefix), full


def _debian_release() -> str:
    release = dict(
        line.split("=", 1)
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines()
        if "=" in line
    )
    if release.get("ID") != "debian" or "VERSION_CODENAME" not in release:
        raise ContainersUnavailable(
            "the python stand-in is a Debian root made with this machine's apt: needs Debian"
        )
    return release["VERSION_CODENAME"]


def ensure_python(podman: Podman, version: str) -> str:
    reference = f"docker.io/library/python:{version}-slim"
    prefix, full = _interpreter(version)
    release = _debian_release()
    recipe = _recipe("python", full, release, *DEBIAN_PACKAGES)
    if podman.label(reference, RECIPE_LABEL) == recipe:
        return reference
    if shutil.which("mmdebstrap") is None:
        raise ContainersUnavailable(f"mmdebstrap not found: {REMEDY}")
    with tempfile.TemporaryDirectory(prefix="bulwark-python-image-") as tmp:
        work = Path(tmp)
        local = work / "local"
        shutil.copytree(
            prefix,
            local,
            symlinks=True,
            ignore=lambda _, names: [
                n for n in names if _DROPPED.match(n) or _DROPPED_FILES.match(n)
            ],
        )
        (local / "lib" / f"python{version}" / "site-packages").mkdir()
        # pyenv's pip/idle/config scripts point at the source prefix: keep only interpreters.
        for script in (local / "bin").iterdir():
            if not script.name.startswith("python") or script.name.endswith(("-config", ".py")):
                script.unlink()
        # Stripped as the official build does: the debug symbols would double the image.
        _run(["strip", "--strip-unneeded", *map(str, (local / "lib").rglob("*.so*"))])
        for alias in ("python", "python3"):
            (local / "bin" / alias).unlink(missing_ok=True)
            (local / "bin" / alias).symlink_to(f"python{version}")
        mirrors = [
            f"deb http://deb.debian.org/debian {release} main",
            f"deb http://deb.debian.org/debian {release}-updates main",
            f"deb http://deb.debian.org/debian-security {release}-security main",
        ]
        _run([
            "mmdebstrap", "--quiet", "--variant=minbase", "--format=tar",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            *(f"--dpkgopt=path-exclude=/usr/share/{path}/*" for path in SLIM_EXCLUDED),
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            f'--customize-hook=cp -a {local}/. "$1/usr/local/"',
            # libpython is shared: the loader finds it in /usr/local/lib through ld.so.cache.
            '--customize-hook=chroot "$1" ldconfig',
            release, str(work / "root.tar"), *mirrors,
        ], timeout=1200)  # fmt: skip
        changes = [
            "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"ENV PYTHON_VERSION={full}",
            'CMD ["python3"]',
            f"LABEL {RECIPE_LABEL}={recipe}",
        ]
        podman("image", "rm", "--force", reference, check=False)  # no dangling old build
        podman(
            "import", *(f"--change={change}" for change in changes), str(work / "root.tar"),
            reference, timeout=1200,
        )  # fmt: skip
    return reference
