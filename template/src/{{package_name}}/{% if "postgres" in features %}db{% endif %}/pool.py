"""The asyncpg pool, owned by the lifespan.

Every acquire is bounded: an exhausted pool answers 503 with Retry-After instead of letting
requests queue until their clients give up. `statement_timeout` sits below the request timeout
(DESIGN.md §4) so the server abandons a query nobody waits for any more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

import asyncpg
from fastapi import Request
from fastapi.responses import JSONResponse

from ..settings import Settings

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 10.0


class PoolExhausted(Exception):
    """No connection became free within the acquire timeout."""


class PostgresPool:
    """Lifespan resource wrapping `asyncpg.Pool` with bounded acquire and close."""

    name = "postgres"

    def __init__(
        self,
        settings: Settings,
        *,
        acquire_guard: Callable[[], AbstractAsyncContextManager[object]] = nullcontext,
    ) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None
        # Wraps each acquire, e.g. a circuit breaker's guard (resilience/db_breaker.py).
        self._acquire_guard = acquire_guard

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL pool is used before the lifespan started it")
        return self._pool

    async def start(self) -> None:
        settings = self._settings
        self._pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            command_timeout=settings.pool_command_timeout_s,
            # Sent in the startup packet: no extra round trip per new connection.
            server_settings={"statement_timeout": str(settings.statement_timeout_ms)},
        )

    async def stop(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        try:
            await asyncio.wait_for(pool.close(), timeout=CLOSE_TIMEOUT_S)
        except TimeoutError:
            logger.warning("pool close timed out; terminating connections")
            pool.terminate()

    async def check(self) -> bool:
        try:
            async with self.acquire() as connection:
                await connection.fetchval("SELECT 1", timeout=1.0)
        except (OSError, TimeoutError, asyncpg.PostgresError, PoolExhausted, RuntimeError):
            return False
        return True

    def details(self) -> dict[str, object]:
        if self._pool is None:
            return {"started": False}
        pool = self._pool
        size, idle = pool.get_size(), pool.get_idle_size()
        return {
            "started": True,
            "size": size,
            "idle": idle,
            "in_use": size - idle,
            "min_size": pool.get_min_size(),
            "max_size": pool.get_max_size(),
        }

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        """A connection within the acquire timeout, or `PoolExhausted`."""
        pool = self.pool
        try:
            async with self._acquire_guard():
                connection = await pool.acquire(timeout=self._settings.pool_acquire_timeout_s)
        except TimeoutError:
            raise PoolExhausted("no database connection free within the acquire timeout") from None
        try:
            yield connection
        finally:
            await pool.release(connection)


async def pool_exhausted_handler(request: Request, exc: Exception) -> JSONResponse:
    """503 + Retry-After: the client should come back, not wait on a full pool."""
    return JSONResponse(
        {"detail": "database busy, retry shortly"},
        status_code=503,
        headers={"Retry-After": "1"},
    )
