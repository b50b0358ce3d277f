"""The data scenarios of `bulwark loadtest`: `db-read` and `cached-read`.

Both GET one seeded item by id; the baseline is `apps/baseline_db.py` (bare FastAPI + asyncpg
doing the same query). `db-read` turns the service's item cache off, if it has one, so both
sides hit PostgreSQL; `cached-read` leaves it on, so the service answers from its cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from generator.harness import apps
from generator.harness.load.scenario import Bench, Scenario
from generator.harness.project import seed_item


@dataclass(frozen=True, slots=True)
class ItemRead(Scenario):
    """GET one item by id (`{item_id}` in the path), seeded before both sides start."""

    def prepare(self, bench: Bench) -> str:
        """Seed the item both sides read; its id fills the path's `{item_id}`."""
        return self.path.format(item_id=seed_item(bench.project, bench.env))


DB_READ = ItemRead(
    "db-read",
    "one item by id from PostgreSQL (item cache off) vs bare FastAPI + asyncpg",
    "/items/{item_id}",
    features=("postgres",),
    baseline_app=apps.BASELINE_DB,
    service_settings=(("CACHE_ITEMS_TTL_S", "0"),),
    target_ratio=0.85,
)
# Against the bare FastAPI + asyncpg read, which is db-read's baseline too.
CACHED_READ = ItemRead(
    "cached-read",
    "one item by id through the cache vs bare FastAPI + asyncpg reading PostgreSQL",
    "/items/{item_id}",
    features=("postgres", "cache"),
    baseline_app=apps.BASELINE_DB,
    target_ratio=1.5,
    target_wording="rps / bare db-read rps",
)
