"""Every scenario of `bulwark loadtest`, in the order `--all` runs them and the table lists
them. A new scenario is one object added here."""

from __future__ import annotations

from generator.harness.load.ablation import ABLATION
from generator.harness.load.batched import DB_READ_BATCHED
from generator.harness.load.container import mirror
from generator.harness.load.data import CACHED_READ, DB_READ
from generator.harness.load.loop_monitor import LOOP_MONITOR
from generator.harness.load.overload import OVERLOAD
from generator.harness.load.routed import ROUTED, ROUTED_50, ROUTED_LOOPGUARD, ROUTED_NAIVE
from generator.harness.load.scenario import Scenario
from generator.harness.load.tracing import TRACING

HEALTH = Scenario(
    "health",
    "liveness probe: the gate answers it without guards, timer or a route's work",
    "/health",
    target_ratio=0.90,
)
DIRECT = Scenario(
    "direct",
    "the nginx scenario's servers (2 workers) without nginx: its direct reference",
    "/health",
    workers=2,
)
NGINX = Scenario(
    "nginx",
    "through real nginx with the project's own site file, 2 workers on both sides",
    "/health",
    workers=2,
    via_nginx=True,
)
CONTAINER_HEALTH = mirror(HEALTH)
CONTAINER_DB_READ = mirror(DB_READ)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        ROUTED,
        ROUTED_50,
        ROUTED_NAIVE,
        ROUTED_LOOPGUARD,
        ABLATION,
        HEALTH,
        DIRECT,
        NGINX,
        DB_READ,
        DB_READ_BATCHED,
        CACHED_READ,
        OVERLOAD,
        LOOP_MONITOR,
        TRACING,
        CONTAINER_HEALTH,
        CONTAINER_DB_READ,
    )
}
