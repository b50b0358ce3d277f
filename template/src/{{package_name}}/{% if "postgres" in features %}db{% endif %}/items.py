"""SQL for the example `items` resource; functions take a connection, so callers own scope."""

from __future__ import annotations

import asyncpg


async def create_item(
    connection: asyncpg.pool.PoolConnectionProxy, name: str, description: str | None
) -> asyncpg.Record:
    record = await connection.fetchrow(
        "INSERT INTO items (name, description) VALUES ($1, $2)"
        " RETURNING id, name, description, created_at",
        name,
        description,
    )
    if record is None:  # unreachable: INSERT ... RETURNING yields exactly one row
        raise RuntimeError("INSERT ... RETURNING returned no row")
    return record


async def get_item(
    connection: asyncpg.pool.PoolConnectionProxy, item_id: int
) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT id, name, description, created_at FROM items WHERE id = $1", item_id
    )


async def list_items(
    connection: asyncpg.pool.PoolConnectionProxy, *, after: int | None, limit: int
) -> list[asyncpg.Record]:
    """Keyset page by id: cost stays flat however deep the client pages (unlike OFFSET)."""
    return await connection.fetch(
        "SELECT id, name, description, created_at FROM items WHERE id > $1 ORDER BY id LIMIT $2",
        after or 0,
        limit,
    )
