"""The asyncpg pool, owned by the lifespan.

Contract:
- Every acquire is bounded by `pool_acquire_timeout_s` (or the request deadline, if sooner): an
  exhausted pool raises `PoolExhausted` (503 + Retry-After) instead of queueing requests until
  their clients give up.
- `statement_timeout` is set per connection in the startup packet, below the request timeout,
  so the server abandons a query nobody waits for any more. When the request's deadline
  (`deadline.remaining()`) is sooner, the acquired connection gets that shorter timeout for this
  use only; the release restores the default.
- Release (`pool_reset`): "transaction" (default) rolls back an open transaction and restores
  what this module changed, with no round trip otherwise; asyncpg's own reset query costs one
  more round trip a request. "full" runs it, for code that leaves session state (SET, LISTEN,
  advisory locks, held cursors) on a pooled connection.
- Errors inside `acquire()` come out as `QueryTimeout` (504) or `ConnectionFailed` (503); the
  connection always goes back to the pool (asyncpg shields the release from cancellation).
- `read()` runs an idempotent read and retries it once, on a fresh connection, after a
  connection-level error: after a PostgreSQL restart the pool reconnects by itself and the
  first request does not see the dead connection.
- `stop()` closes gracefully within `pool_close_timeout_s`, then terminates.
Clock: `time.perf_counter()` for acquire waits; deadlines are `time.monotonic()` (deadline.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, nullcontext
from types import TracebackType
from typing import TypeVar

import asyncpg
import stamina
from fastapi import Request
from fastapi.responses import JSONResponse

from .. import deadline
from ..observability.stats import Family, Histogram
from ..settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
Connection = asyncpg.pool.PoolConnectionProxy

CHECK_TIMEOUT_S = 1.0
# Upper bounds of the acquire-wait histogram, in seconds.
WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Errors after which the connection (or the server) is gone, not the query wrong: a restart
# (AdminShutdown, CannotConnectNow while it starts), a refused socket, a full server, and the
# driver's protocol-state error when the server cuts a connection mid-use during a fast shutdown
# (InternalClientError; found by `bulwark chaos --scenario postgres-down`).
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InternalClientError,
)


class DatabaseUnavailable(Exception):
    """The database cannot serve this request now; the client should retry shortly (503)."""


class PoolExhausted(DatabaseUnavailable):
    """No connection became free within the acquire timeout."""


class ConnectionFailed(DatabaseUnavailable):
    """The connection or the server failed (restart, network); a retry may succeed."""


class QueryTimeout(Exception):
    """The query ran past its statement timeout or the request's deadline (504)."""


class AcquireStats:
    """Acquire waits in plain numbers: cheap on the hot path, exported at scrape time."""

    __slots__ = ("exhausted", "retries", "wait_max_s", "waiting", "waits")

    def __init__(self) -> None:
        self.waiting = 0
        self.exhausted = 0
        self.retries = 0
        self.wait_max_s = 0.0
        self.waits = Histogram(WAIT_BUCKETS_S)

    @property
    def acquires(self) -> int:
        return self.waits.count

    def record(self, waited_s: float) -> None:
        self.waits.observe(waited_s)
        if waited_s > self.wait_max_s:
            self.wait_max_s = waited_s


class PostgresPool:
    """Lifespan resource wrapping `asyncpg.Pool` with bounded acquire, timeouts and close."""

    name = "postgres"

    def __init__(
        self,
        settings: Settings,
        *,
        acquire_guard: Callable[[], AbstractAsyncContextManager[object]] = nullcontext,
    ) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None
        self.stats = AcquireStats()
        # Acquires in progress or holding a connection, all through `acquire()` (see checkout).
        self._claims = 0
        # Wraps each acquire, e.g. the circuit breaker's guard when that feature is on.
        self._acquire_guard = acquire_guard
        # Backend pids of checked-out connections whose statement_timeout was shortened;
        # `give_back` drops each one, so the set holds only connections in use.
        self._shortened: set[int] = set()

    @property
    def pool(self) -> asyncpg.Pool:
        """The asyncpg pool, for what `acquire()` does not cover (e.g. COPY). Take connections
        through `acquire()`: its waits are bounded only when it sees every claim (checkout)."""
        if self._pool is None:
            raise RuntimeError("the PostgreSQL pool is used before the lifespan started it")
        return self._pool

    async def start(self) -> None:
        settings = self._settings
        self._pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            max_queries=settings.pool_max_queries,
            max_inactive_connection_lifetime=settings.pool_max_inactive_connection_lifetime_s,
            command_timeout=settings.pool_command_timeout_s or None,
            # Bounds opening a connection (asyncpg's default is 60 s).
            timeout=settings.pool_acquire_timeout_s,
            statement_cache_size=settings.statement_cache_size,
            reset=self._restore if settings.pool_reset == "transaction" else None,
            # Sent in the startup packet: no extra round trip per new connection, and it is the
            # value `RESET ALL` returns to when a connection goes back to the pool.
            server_settings={
                "statement_timeout": str(settings.statement_timeout_ms),
                "application_name": settings.service_name,
            },
        )

    async def _restore(self, connection: asyncpg.Connection) -> None:
        """The "transaction" reset: asyncpg has rolled back an open transaction already; undo
        the shortened statement_timeout, the only session setting this module changes."""
        if connection.get_server_pid() in self._shortened:
            # RESET returns to the startup packet's value (server_settings above).
            await connection.execute("RESET statement_timeout")

    async def stop(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        try:
            await asyncio.wait_for(pool.close(), timeout=self._settings.pool_close_timeout_s)
        except TimeoutError:
            logger.warning("pool close timed out; terminating connections")
            pool.terminate()

    async def check(self) -> bool:
        """`SELECT 1` through the pool, the wait for a connection included, within 1 s: a
        probe must answer before its own timeout (Kubernetes' default is 1 s)."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S), self.acquire() as connection:
                await connection.fetchval("SELECT 1")
        except (TimeoutError, DatabaseUnavailable, QueryTimeout, RuntimeError):
            return False
        return True

    def details(self) -> dict[str, object]:
        if self._pool is None:
            return {"started": False}
        pool, stats = self._pool, self.stats
        size, idle = pool.get_size(), pool.get_idle_size()
        return {
            "started": True,
            "size": size,
            "idle": idle,
            "in_use": size - idle,
            "min_size": pool.get_min_size(),
            "max_size": pool.get_max_size(),
            "acquires": stats.acquires,
            "waiting": stats.waiting,
            "exhausted": stats.exhausted,
            "retries": stats.retries,
            "acquire_wait_max_ms": round(stats.wait_max_s * 1000, 3),
            "acquire_wait_avg_ms": round(stats.waits.total * 1000 / (stats.acquires or 1), 3),
        }

    def families(self) -> Iterator[Family]:
        """Pool occupancy and acquire waits for `/metrics` (read at scrape time)."""
        stats = self.stats
        pool = self._pool
        size = pool.get_size() if pool is not None else 0
        idle = pool.get_idle_size() if pool is not None else 0
        max_size = self._settings.pool_max_size
        yield Family(
            "gauge",
            "db_pool_connections",
            "PostgreSQL pool connections by state (idle, in_use) and the pool's bound (max).",
            ("state",),
            [(("idle",), idle), (("in_use",), size - idle), (("max",), max_size)],
        )
        yield Family(
            "gauge",
            "db_pool_waiting",
            "Requests waiting for a connection now.",
            (),
            [((), stats.waiting)],
        )
        yield Family(
            "histogram",
            "db_pool_acquire_wait_seconds",
            "Time to get a connection from the pool.",
            (),
            [((), stats.waits)],
        )
        yield Family(
            "counter",
            "db_pool_exhausted_total",
            "Acquires that found no connection within the acquire timeout (answered 503).",
            (),
            [((), stats.exhausted)],
        )
        yield Family(
            "counter",
            "db_read_retries_total",
            "Idempotent reads retried after a connection-level error.",
            (),
            [((), stats.retries)],
        )

    def acquire(self) -> Acquisition:
        """`async with pool.acquire() as connection`: a connection within the acquire timeout;
        errors inside come out as ours (see top) and the connection always goes back."""
        return Acquisition(self)

    async def checkout(self) -> Connection:
        """Take a connection for `Acquisition`, which gives it back."""
        pool, settings, stats = self.pool, self._settings, self.stats
        remaining = deadline.remaining()
        if remaining is not None and remaining <= 0:
            raise QueryTimeout("the request deadline passed before the query")
        wait_s = settings.pool_acquire_timeout_s
        if remaining is not None:
            wait_s = min(wait_s, remaining)
        # Fewer claims than max_size means no one waits and a connection is free (or is opened,
        # bounded by the connect timeout), so only a possible wait gets a timer: asyncio's costs
        # ~3% of a whole GET /items/{id} here. Holds while every acquire goes through here.
        bound_s = None if self._claims < settings.pool_max_size else wait_s
        self._claims += 1
        started = time.perf_counter()
        stats.waiting += 1
        try:
            async with self._acquire_guard():
                connection: Connection = await pool.acquire(timeout=bound_s)
        except BaseException as exc:
            self._claims -= 1
            if isinstance(exc, TimeoutError):
                stats.exhausted += 1
                raise PoolExhausted(
                    "no database connection free within the acquire timeout"
                ) from None
            if isinstance(exc, CONNECTION_ERRORS):
                raise ConnectionFailed(f"cannot connect to the database: {exc!r}") from exc
            raise
        finally:
            stats.waiting -= 1
        stats.record(time.perf_counter() - started)
        if remaining is not None and remaining * 1000 < settings.statement_timeout_ms:
            try:
                # An int formatted by us: SET takes no bind parameters.
                self._shortened.add(connection.get_server_pid())
                await connection.execute(f"SET statement_timeout = {max(int(remaining * 1000), 1)}")
            except BaseException as exc:
                await self.give_back(pool, connection)
                translated = _translated(exc)
                if translated is exc:
                    raise
                raise translated from exc
        return connection

    async def give_back(self, pool: asyncpg.Pool, connection: Connection) -> None:
        """Return a connection `checkout` gave; never raises an error of its own."""
        # Read before the release, which ends the proxy; dropped after it, whatever happened,
        # so a terminated connection's pid does not stay behind (nor any in `full` mode).
        shortened = connection.get_server_pid() if self._shortened else None
        try:
            # asyncpg shields the release from cancellation.
            await pool.release(connection)
        except Exception:
            # The reset failed (the server went away): asyncpg has already terminated the
            # connection and the pool opens a new one; the request's own outcome stands.
            logger.debug("releasing a database connection failed", exc_info=True)
        finally:
            self._claims -= 1
            if shortened is not None:
                self._shortened.discard(shortened)

    async def read(self, query: Callable[[Connection], Awaitable[T]]) -> T:
        """Run an idempotent read; after a connection-level error, once more on a fresh one."""
        try:
            async with self.acquire() as connection:
                return await query(connection)
        except ConnectionFailed as exc:
            failure: ConnectionFailed | None = exc
        # Only a failed read pays for stamina (~150 µs to set up a retry loop, measured here):
        # the failure above is replayed as its first attempt, so stamina schedules the single
        # retry with jittered backoff, never past the request's deadline.
        self.stats.retries += 1
        remaining = deadline.remaining()
        retrying = stamina.retry_context(
            on=ConnectionFailed,
            attempts=2,
            timeout=None if remaining is None else max(remaining, 0.0),
            wait_initial=0.02,
            wait_max=0.1,
            wait_jitter=0.02,
        )
        async for attempt in retrying:
            with attempt:
                if failure is not None:
                    replayed, failure = failure, None
                    raise replayed
                async with self.acquire() as connection:
                    result = await query(connection)
        return result

    async def read_concurrently(self, *queries: Callable[[Connection], Awaitable[T]]) -> list[T]:
        """Run independent reads at once, each on its own connection (one connection runs one
        query at a time); results in argument order. The first failure cancels the others."""
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self.read(query)) for query in queries]
        return [task.result() for task in tasks]


class Acquisition:
    """The context manager `PostgresPool.acquire()` returns.

    A class rather than `@asynccontextmanager`: it is on the path of every database call, and
    the generator-based manager costs ~10 more Python calls each time (measured here).
    """

    __slots__ = ("_connection", "_pool", "_postgres")

    def __init__(self, postgres: PostgresPool) -> None:
        self._postgres = postgres
        self._pool: asyncpg.Pool | None = None
        self._connection: Connection | None = None

    async def __aenter__(self) -> Connection:
        self._pool = self._postgres.pool  # the one to give back to, even if stop() runs
        self._connection = await self._postgres.checkout()
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and self._pool is not None:
            await self._postgres.give_back(self._pool, connection)
        if exc is not None:
            translated = _translated(exc)
            if translated is not exc:
                raise translated from exc


def _translated(exc: BaseException) -> BaseException:
    """A driver error as the service's own: timeouts 504, lost connections 503 (see top)."""
    if isinstance(exc, asyncpg.QueryCanceledError | TimeoutError):
        return QueryTimeout("the database query timed out")
    if isinstance(exc, CONNECTION_ERRORS):
        return ConnectionFailed(f"the database connection failed: {exc!r}")
    return exc


async def database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """503 + Retry-After: the client should come back, not wait on a full or absent database."""
    return JSONResponse(
        {"detail": "database unavailable, retry shortly"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def query_timeout_handler(request: Request, exc: Exception) -> JSONResponse:
    """504: the query outlived its budget; no stack trace, no SQL."""
    return JSONResponse({"detail": "database query timed out"}, status_code=504)
