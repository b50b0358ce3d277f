"""A machine to boot the generated systemd unit on: the `python:<X.Y>-slim` stand-in with
systemd as /sbin/init, so the project's venv is built on the same CPython the image tests use.

Layered over that stand-in with apt (its sources list points at the Debian mirrors it was made
from) and labelled with a hash of this recipe and the stand-in's own, so it is built once per
machine and rebuilt only when either changes.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from generator.images.base import RECIPE_LABEL, ensure_python
from generator.images.podman import Podman

# systemd-sysv provides /sbin/init; dbus lets `systemd-analyze security` read a loaded unit.
SYSTEMD_PACKAGES = ("systemd", "systemd-sysv", "dbus")
CONTAINERFILE = """\
FROM {base}
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {packages} \\
 && rm -rf /var/lib/apt/lists/*
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
LABEL {label}={recipe}
"""


def ensure_systemd(podman: Podman, version: str) -> str:
    """Build `localhost/bulwark-systemd:<version>` unless this machine has it from this recipe;
    return the image reference."""
    base = ensure_python(podman, version)
    reference = f"localhost/bulwark-systemd:{version}"
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(str(podman.label(base, RECIPE_LABEL)).encode())
    recipe = digest.hexdigest()[:16]
    if podman.label(reference, RECIPE_LABEL) == recipe:
        return reference
    with tempfile.TemporaryDirectory(prefix="bulwark-systemd-image-") as tmp:
        containerfile = Path(tmp) / "Containerfile"
        containerfile.write_text(
            CONTAINERFILE.format(
                base=base, packages=" ".join(SYSTEMD_PACKAGES), label=RECIPE_LABEL, recipe=recipe
            ),
            encoding="utf-8",
        )
        podman("image", "rm", "--force", reference, check=False)  # no dangling old build
        podman.build(Path(tmp), containerfile, reference)
    return reference
