"""The service under attack, started the way production runs it, and what it says about itself.

`python -m <package>` in prod mode on the server core (as `bulwark chaos` runs it), optionally
behind the project's own nginx site on the harness's core; the settings a deployment config
ships are read from the rendered file itself, so the attack hits what would be deployed.
Legitimate clients are the chaos probe's paced lanes, in a process of their own (legit.py);
the service's own figures come from its `/metrics` on the app port (nginx refuses that path to
outsiders).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import httpx

from generator.harness import nginx, servers
from generator.harness.abuse.legit import legit_clients
from generator.harness.abuse.scenario import Context
from generator.harness.chaos.probe import Sample
from generator.harness.machine import WRK_CPU

T = TypeVar("T")

# Settings the harness decides whatever a deployment file says: where and how it listens.
_HARNESS_OWNED = frozenset({"ENVIRONMENT", "HOST", "PORT", "WORKERS"})
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
# Seconds of legitimate traffic before an attack that count for nothing: each client's first
# requests open its connections (and nginx's to the app), which no later request pays.
WARMUP_S = 0.5
# Seconds of legitimate traffic alone after the warm-up: the unloaded figure.
BASELINE_S = 2.0


def deploy_settings(project_root: Path, prefix: str, target: str) -> dict[str, str]:
    """The service settings (prefix removed) a deployment target's rendered config ships.

    kubernetes: `deploy/k8s/base/config.env`; systemd (nginx's companion on a VM):
    `deploy/systemd/<slug>.env.example`. What the harness owns (HOST, PORT, WORKERS,
    ENVIRONMENT) and unprefixed URLs (the harness's own database) are left out.
    """
    files = {
        "kubernetes": sorted((project_root / "deploy" / "k8s" / "base").glob("config.env")),
        "systemd": sorted((project_root / "deploy" / "systemd").glob("*.env.example")),
    }[target]
    if len(files) != 1:
        raise FileNotFoundError(f"{project_root}: no rendered {target} settings file")
    settings = {}
    for line in files[0].read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(line)
        if match is None or not match.group(1).startswith(prefix):
            continue
        name = match.group(1).removeprefix(prefix)
        if name not in _HARNESS_OWNED:
            settings[name] = match.group(2).strip()
    return settings


@contextmanager
def fronted(ctx: Context, server: servers.RunningServer) -> Iterator[nginx.Proxied]:
    """`server` behind the project's rendered nginx site, nginx on the harness's core."""
    with nginx.front(ctx.project.root, server, cpu=WRK_CPU) as proxied:
        yield proxied


def port_of(url: str) -> int:
    """The port of a loopback base URL (`http://127.0.0.1:8123`)."""
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition as {`name{labels}`: value}, comments skipped.

    By hand: the few samples read here need no parser library the harness does not have.
    """
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def metrics(server: servers.RunningServer) -> dict[str, float]:
    """The service's own /metrics, read on its port."""
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        response = await client.get(server.url("/metrics"))
    response.raise_for_status()
    return parse_metrics(response.text)


@dataclass(frozen=True, slots=True)
class Measured(Generic[T]):
    """Legitimate clients' answers alone, then while the attack ran; and the attack's outcome."""

    baseline: list[Sample]
    attacked: list[Sample]
    outcome: T


async def under_attack(base_url: str, path: str, attack: Awaitable[T]) -> Measured[T]:
    """Legitimate clients on `base_url` + `path`: warmed up, alone for BASELINE_S, then through
    `attack` (run in this loop; the clients run in their own process, see legit.py)."""
    async with legit_clients(base_url, path) as legit:
        await asyncio.sleep(WARMUP_S + BASELINE_S)
        started_s = time.monotonic() - legit.zero
        outcome = await attack
        ended_s = time.monotonic() - legit.zero
    baseline = [s for s in legit.samples if WARMUP_S <= s.sent_s < WARMUP_S + BASELINE_S]
    attacked = [s for s in legit.samples if started_s <= s.sent_s < ended_s]
    return Measured(baseline, attacked, outcome)


@asynccontextmanager
async def watched(server: servers.RunningServer) -> AsyncIterator[dict[str, dict[str, float]]]:
    """The service's /metrics before and after the block, as {"before": ..., "after": ...}."""
    readings = {"before": await metrics(server)}
    yield readings
    readings["after"] = await metrics(server)
