"""Apply the SQL migrations in `migrations/` with yoyo (`python -m <package>.db.migrate`).

yoyo runs plain SQL files, records what ran, and holds a lock while it works, so replicas that
start together never migrate at once. It runs as its own step (make migrate, a Kubernetes Job,
a pre-start command), never inside the serving process, so its sync driver blocks no loop.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from yoyo import get_backend, read_migrations

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def yoyo_url(database_url: str) -> str:
    """yoyo picks the driver from the scheme; asyncpg-style URLs name none."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    return f"postgresql+psycopg://{rest}"


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; returns the ids applied (empty when up to date)."""
    backend = get_backend(yoyo_url(database_url))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
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
