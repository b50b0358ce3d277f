"""Apply the SQL migrations in `migrations/` with yoyo (`python -m <package>.db.migrate`).

yoyo runs plain SQL files (with rollbacks) and records what ran. Replicas that start together
serialise on a PostgreSQL session advisory lock taken before yoyo touches anything: the first
migrates, the others wait, then find nothing to apply. The lock dies with its session, so a
crashed run never leaves a stale lock behind. Migrations run as their own
step (make migrate, a Kubernetes Job, a pre-start command), never inside the serving process,
so their sync driver blocks no event loop.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any fixed bigint works: the key only has to be the same for every replica of this service.
MIGRATION_LOCK_ID = 0x6D6967726174650A
# A run waiting this long for another replica's migration gives up instead of hanging a deploy.
LOCK_TIMEOUT_S = 300


def yoyo_url(database_url: str) -> str:
    """yoyo picks the driver from the scheme; asyncpg-style URLs name none."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    return f"postgresql+psycopg://{rest}"


def migrate(database_url: str, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> list[str]:
    """Apply pending migrations; returns the ids applied (empty when up to date)."""
    url = yoyo_url(database_url)
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as lock_session:
        lock_session.execute(
            "SELECT set_config('lock_timeout', %s, false)", (f"{int(lock_timeout_s * 1000)}ms",)
        )
        lock_session.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        backend = get_backend(url)
        try:
            # Under our lock nobody else migrates: a yoyo lock row left by a crash is stale.
            backend.break_lock()
            migrations = read_migrations(str(MIGRATIONS_DIR))
            with backend.lock():
                pending = backend.to_apply(migrations)
                backend.apply_migrations(pending)
        finally:
            backend.connection.close()
    return [migration.id for migration in pending]


def main() -> int:
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        print("DATABASE_URL: not set; export the database to migrate", file=sys.stderr)
        return 2
    applied = migrate(database_url)
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
