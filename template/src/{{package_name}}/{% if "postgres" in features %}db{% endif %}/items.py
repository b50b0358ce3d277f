"""The example `items` resource's data: SQL taking a connection, and the store routes use.

Values leave the store as JSON-able dicts (`ItemData`), the shape a cache can keep without
pickling; the API validates them into its response model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from ..settings import Settings
from .batch import Batcher
from .pool import Connection, PostgresPool

ItemData = dict[str, Any]


def to_data(record: asyncpg.Record) -> ItemData:
    return {
        "id": record["id"],
        "name": record["name"],
        "description": record["description"],
        "created_at": record["created_at"].isoformat(),
    }


async def create_item(connection: Connection, name: str, description: str | None) -> asyncpg.Record:
    record = await connection.fetchrow(
        "INSERT INTO items (name, description) VALUES ($1, $2)"
        " RETURNING id, name, description, created_at",
        name,
        description,
    )
    if record is None:  # unreachable: INSERT ... RETURNING yields exactly one row
        raise RuntimeError("INSERT ... RETURNING returned no row")
    return record


async def get_item(connection: Connection, item_id: int) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT id, name, description, created_at FROM items WHERE id = $1", item_id
    )


async def get_items(connection: Connection, item_ids: Sequence[int]) -> list[asyncpg.Record]:
    """Many items in one round trip; missing ids are simply absent from the result."""
    return await connection.fetch(
        "SELECT id, name, description, created_at FROM items WHERE id = ANY($1::bigint[])",
        list(item_ids),
    )


async def list_items(
    connection: Connection, *, after: int | None, limit: int
) -> list[asyncpg.Record]:
    """Keyset page by id: cost stays flat however deep the client pages (unlike OFFSET)."""
    return await connection.fetch(
        "SELECT id, name, description, created_at FROM items WHERE id > $1 ORDER BY id LIMIT $2",
        after or 0,
        limit,
    )


async def update_item(
    connection: Connection, item_id: int, name: str, description: str | None
) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "UPDATE items SET name = $2, description = $3 WHERE id = $1"
        " RETURNING id, name, description, created_at",
        item_id,
        name,
        description,
    )


async def delete_item(connection: Connection, item_id: int) -> bool:
    deleted: int | None = await connection.fetchval(
        "DELETE FROM items WHERE id = $1 RETURNING id", item_id
    )
    return deleted is not None


class ItemStore:
    """Reads (retried once on a connection failure) and writes of items; the `cache` feature
    wires a subclass that reads through the cache and invalidates on writes.

    `loader` batches lookups by id across concurrent requests into one `= ANY($1)` query
    (`db/batch.py`); `get` goes through it when `settings.db_batch_reads` is on.
    """

    def __init__(self, postgres: PostgresPool, settings: Settings) -> None:
        self.postgres = postgres
        self.loader: Batcher[int, ItemData] = Batcher(
            self.get_many,
            max_batch=settings.db_batch_max_size,
            window_s=settings.db_batch_window_ms / 1000,
        )
        self._batch_reads = settings.db_batch_reads

    async def get(self, item_id: int) -> ItemData | None:
        if self._batch_reads:
            return await self.loader.load(item_id)
        record = await self.postgres.read(lambda connection: get_item(connection, item_id))
        return None if record is None else to_data(record)

    async def get_many(self, item_ids: Sequence[int]) -> dict[int, ItemData]:
        records = await self.postgres.read(lambda connection: get_items(connection, item_ids))
        return {record["id"]: to_data(record) for record in records}

    async def page(self, *, after: int | None, limit: int) -> list[ItemData]:
        records = await self.postgres.read(
            lambda connection: list_items(connection, after=after, limit=limit)
        )
        return [to_data(record) for record in records]

    async def create(self, name: str, description: str | None) -> ItemData:
        async with self.postgres.acquire() as connection:
            return to_data(await create_item(connection, name, description))

    async def update(self, item_id: int, name: str, description: str | None) -> ItemData | None:
        async with self.postgres.acquire() as connection:
            record = await update_item(connection, item_id, name, description)
        return None if record is None else to_data(record)

    async def delete(self, item_id: int) -> bool:
        async with self.postgres.acquire() as connection:
            return await delete_item(connection, item_id)
