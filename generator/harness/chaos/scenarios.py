"""Every fault of `bulwark chaos`, in the order `--all` runs them. A new fault is one object
added here."""

from __future__ import annotations

from generator.harness.chaos.hang import HANG
from generator.harness.chaos.postgres_down import POSTGRES_DOWN
from generator.harness.chaos.redis_down import REDIS_DOWN
from generator.harness.chaos.scenario import Fault
from generator.harness.chaos.sigterm import SIGTERM
from generator.harness.chaos.worker_kill import WORKER_KILL

SCENARIOS: dict[str, Fault] = {
    f.name: f for f in (POSTGRES_DOWN, REDIS_DOWN, SIGTERM, WORKER_KILL, HANG)
}
