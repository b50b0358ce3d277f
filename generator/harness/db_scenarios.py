"""The data scenarios of `bulwark loadtest` (issue 4): `db-read` and `cached-read`.

Both GET one seeded item by id; the baseline is `baseline_db_app.py` (bare FastAPI + asyncpg
doing the same query). `db-read` turns the service's item cache off, if it has one, so both
sides hit PostgreSQL; `cached-read` leaves it on, so the service answers from its cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from generator.harness import service as svc

BASELINE_DB_APP = Path(__file__).with_name("baseline_db_app.py")

_SEED = """\
import asyncio, os
import asyncpg

async def main():
    connection = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        print(await connection.fetchval(
            "INSERT INTO items (name, description) VALUES ($1, $2) RETURNING id",
            "bench item", "read by the db-read and cached-read scenarios"))
    finally:
        await connection.close()

asyncio.run(main())
"""


def seed_item(project: svc.Project, extra_env: Mapping[str, str]) -> dict[str, str]:
    """Insert the item both sides read; its id fills the scenario's `{item_id}`."""
    out = svc.run_step(
        [str(project.python), "-c", _SEED],
        cwd=project.root,
        env={**os.environ, **extra_env},
        timeout=svc.STEP_TIMEOUT_S,
    )
    lines = out.strip().splitlines()
    if not lines or not lines[-1].isdigit():
        raise svc.ServiceError(f"seeding the bench item printed no id: {out!r}")
    return {"item_id": lines[-1]}
