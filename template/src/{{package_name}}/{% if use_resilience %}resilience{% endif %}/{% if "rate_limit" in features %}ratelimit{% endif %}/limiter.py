"""The rate limiter: the gate's guard for the default limit, and the store every limit counts in.

Storage: in-process memory, or Redis (redis-py asyncio) when REDIS_URL is set, so replicas
share their counts. Redis failing means fail open: the request is served, one log line per
outage, `fail_open_total` counts the requests let through, and Redis is not asked again for
`REDIS_RETRY_S`, so a dead Redis costs nothing per request (never a 500, never a blocked loop).
Metrics (`families()`): refusals by the limit that refused them and its route template (`*`
for the default limit, checked before routing), and the fail-open count.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Literal

import redis.asyncio
from fastapi import HTTPException
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import (
    RateLimiter as Strategy,
)
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.types import Scope

from ...gate import Rejection
from ...observability.stats import Family
from .client import ClientAddress
from .windows import FixedWindowCounters

logger = logging.getLogger(__name__)

StrategyName = Literal["fixed-window", "sliding-window", "moving-window"]

STRATEGIES: dict[str, Callable[[Storage], Strategy]] = {
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window": SlidingWindowCounterRateLimiter,
    "moving-window": MovingWindowRateLimiter,
}
REDIS_RETRY_S = 2.0
ANY_ROUTE = "*"  # the route label of refusals by the default limit, which spans every route

# The limiter and client of the current request, for `@rate_limit` routes (set by the guard).
current_limiter: ContextVar[tuple[RateLimiter, str, Scope] | None] = ContextVar(
    "rate_limit", default=None
)


def parse_limits(spec: str) -> list[RateLimitItem]:
    """`"100/minute"` or several separated by `;` (`"10/second;100/minute"`); ValueError if bad."""
    return parse_many(spec)


class RateLimiter:
    """The gate's rate-limit guard and a lifespan resource (it owns the Redis connections)."""

    name = "rate_limit"

    def __init__(
        self,
        *,
        default: str | None,
        strategy: StrategyName = "fixed-window",
        redis_url: str | None = None,
        redis_timeout_s: float = 0.1,
        trusted_proxies: str = "127.0.0.1",
    ) -> None:
        self.default = parse_limits(default) if default else []
        # The bucket of a request: its client, as uvicorn's forwarded-header trust sees it.
        self.client_address = ClientAddress(trusted_proxies).resolve
        self._pool: redis.asyncio.ConnectionPool | None = None
        storage: Storage
        if redis_url:
            # No client-side retries: one bounded attempt, then fail open (see module doc).
            self._pool = redis.asyncio.ConnectionPool.from_url(
                redis_url,
                socket_timeout=redis_timeout_s,
                socket_connect_timeout=redis_timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
            storage = RedisStorage(
                f"async+{redis_url}",
                implementation="redispy",
                wrap_exceptions=True,
                connection_pool=self._pool,  # type: ignore[arg-type]  # typed too narrowly by limits
            )
        else:
            storage = MemoryStorage()
        self.backend = "redis" if redis_url else "memory"
        self.strategy_name = strategy
        self._strategy = STRATEGIES[strategy](storage)
        self._counters = (
            FixedWindowCounters() if not redis_url and strategy == "fixed-window" else None
        )
        self._skip_storage_until = 0.0
        self.fail_open_total = 0
        # Refused requests by (limit, route template); limit is "default" or "route".
        self.limited: dict[tuple[str, str], int] = {}

    # -- guard ------------------------------------------------------------------
    async def admit(self, scope: Scope) -> Rejection | None:
        client = self.client_address(scope)
        current_limiter.set((self, client, scope))
        for item in self.default:
            retry_after = await self._hit(item, ("client", client))
            if retry_after is not None:
                # Refused before routing (that is what keeps it cheap): no template to name.
                self._count_limited("default", ANY_ROUTE)
                return Rejection(429, "rate limit exceeded", _headers(item, retry_after))
        return None

    def release(self, scope: Scope) -> None:
        """Nothing to give back: a hit counts whether or not the request succeeds."""

    # -- resource -----------------------------------------------------------------
    async def start(self) -> None:
        """Nothing to open: Redis connections are made on first use (and may fail open)."""

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def check(self) -> bool:
        return True  # limits fail open, so they never make the service unready

    def details(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "strategy": self.strategy_name,
            "default": [str(item) for item in self.default],
            "storage_ok": time.monotonic() >= self._skip_storage_until,
            "fail_open_total": self.fail_open_total,
            "limited_total": sum(self.limited.values()),
        }

    def families(self) -> Iterator[Family]:
        limited = list(self.limited.items())
        yield Family(
            "counter",
            "rate_limit_limited_total",
            "Requests refused with 429, by the limit that refused them (default: the per-client "
            'limit in settings, route="*"; route: a @rate_limit on that route template).',
            ("limit", "route"),
            [(key, count) for key, count in limited],
        )
        yield Family(
            "counter",
            "rate_limit_fail_open_total",
            "Requests let through unchecked because the rate-limit storage was unreachable.",
            ("backend",),
            [((self.backend,), self.fail_open_total)],
        )

    # -- storage --------------------------------------------------------------------
    async def _hit(self, item: RateLimitItem, key: tuple[str, ...]) -> float | None:
        """Count one request; None when allowed, else the seconds until the window resets."""
        if self._counters is not None:
            return self._counters.hit(item, key)
        if self._skip_storage_until and time.monotonic() < self._skip_storage_until:
            self.fail_open_total += 1
            return None
        try:
            if await self._strategy.hit(item, *key):
                if self._skip_storage_until:
                    self._skip_storage_until = 0.0
                    logger.warning("rate limit storage is back", extra={"backend": self.backend})
                return None
            stats = await self._strategy.get_window_stats(item, *key)
        except StorageError as exc:
            self.fail_open_total += 1
            if not self._skip_storage_until:
                logger.warning(
                    "rate limit storage unreachable: failing open",
                    extra={"backend": self.backend, "error": str(exc.storage_error)},
                )
            self._skip_storage_until = time.monotonic() + REDIS_RETRY_S
            return None
        return max(stats.reset_time - time.time(), 0.0)

    def _count_limited(self, limit: str, route: str) -> None:
        key = (limit, route)
        self.limited[key] = self.limited.get(key, 0) + 1

    async def hit_route(self, items: list[RateLimitItem], route: str, client: str) -> None:
        """Count one request against a route's own limits; HTTPException 429 when over."""
        for item in items:
            retry_after = await self._hit(item, ("route", route, client))
            if retry_after is not None:
                self._count_limited("route", route)
                headers = {
                    name.decode(): value.decode() for name, value in _headers(item, retry_after)
                }
                raise HTTPException(429, detail="rate limit exceeded", headers=headers)


def _headers(item: RateLimitItem, retry_after_s: float) -> tuple[tuple[bytes, bytes], ...]:
    seconds = str(max(math.ceil(retry_after_s), 1)).encode()
    return (
        (b"retry-after", seconds),
        (b"ratelimit-limit", str(item.amount).encode()),
        (b"ratelimit-remaining", b"0"),
        (b"ratelimit-reset", seconds),
    )
