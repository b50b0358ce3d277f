"""Named answer sets, so common service shapes are one flag away."""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from generator.answers import AnswerError, questions


@dataclass(frozen=True)
class Preset:
    """A named choice of deployment targets and features; other answers keep their defaults."""

    name: str
    description: str
    targets: tuple[str, ...]
    features: tuple[str, ...]

    def answers(self) -> dict[str, object]:
        """Copier data for this preset, as fresh lists the caller may change."""
        return {"targets": list(self.targets), "features": list(self.features)}


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        preset.name: preset
        for preset in (
            Preset(
                name="minimal",
                description="Bare service: no deployment files, no features",
                targets=(),
                features=(),
            ),
            Preset(
                name="api-postgres",
                description="PostgreSQL service shipped as a Docker image",
                targets=("docker",),
                features=("postgres",),
            ),
            Preset(
                name="k8s",
                description="PostgreSQL service on Kubernetes",
                targets=("docker", "kubernetes"),
                features=("postgres",),
            ),
            Preset(
                name="vm",
                description="PostgreSQL service on VMs: systemd behind nginx",
                targets=("systemd", "nginx"),
                features=("postgres",),
            ),
            Preset(
                name="full",
                description="Every deployment target and every feature",
                targets=("docker", "kubernetes", "systemd", "nginx"),
                # Read from copier.yml so a new feature joins `full` without an edit here.
                features=questions()["features"].choices,
            ),
        )
    }
)


def get_preset(name: str) -> Preset:
    """The preset called `name`; the error lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise AnswerError(f'unknown preset "{name}" (valid: {", ".join(PRESETS)})') from None
