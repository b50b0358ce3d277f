"""The rate limiter: the gate's guard for the default limit, and the store every limit counts in.

Storage: in-process memory, or Redis (redis-py asyncio) when REDIS_URL is set, so replicas
share their counts. Redis failing means falling back to in-process counters: each worker then
holds every client to the limit alone (so the limit still holds, per process), one log line
per outage, the limiter reports itself degraded, and Redis is not asked again for
`REDIS_RETRY_S`, so a dead Redis costs nothing per request (never a 500, never a blocked loop).
Metrics (`families()`): refusals by the limit that refused them and its route template (`*`
for the default limit, checked before routing), hits counted in memory for want of Redis, and
whether the limiter is degraded now.
The bucket is the client address the gate settled (`client_address.py`); IPv6 clients share
one per network of `ipv6_prefix` bits, since one host owns a whole /64.
"""

from __future__ import annotations

import functools
import ipaddress
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
        ipv6_prefix: int = 64,
    ) -> None:
        self.default = parse_limits(default) if default else []
        self.client_key = functools.lru_cache(maxsize=4096)(functools.partial(_bucket, ipv6_prefix))
        self._pool: redis.asyncio.ConnectionPool | None = None
        self._redis: Strategy | None = None
        if redis_url:
            # No client-side retries: one bounded attempt, then memory (see module doc).
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
            self._redis = STRATEGIES[strategy](storage)
        self.backend = "redis" if redis_url else "memory"
        self.strategy_name = strategy
        # The memory backend, and Redis's stand-in while it is unreachable.
        self._memory = STRATEGIES[strategy](MemoryStorage())
        self._counters = FixedWindowCounters() if strategy == "fixed-window" else None
        # The counters when nothing but them ever counts (no Redis): the guard calls them direct.
        self._local = self._counters if self._redis is None else None
        self._redis_retry_at = 0.0  # monotonic; non-zero while Redis is unreachable
        self.fallback_total = 0
        # Refused requests by (limit, route template); limit is "default" or "route".
        self.limited: dict[tuple[str, str], int] = {}

    # -- guard ------------------------------------------------------------------
    async def admit(self, scope: Scope) -> Rejection | None:
        peer = scope.get("client")
        client = self.client_key(peer[0] if peer else "unknown")
        current_limiter.set((self, client, scope))
        local, key = self._local, ("client", client)
        for item in self.default:
            # Counted in process memory: a plain call, no coroutine to create and await.
            retry_after = local.hit(item, key) if local is not None else await self._hit(item, key)
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
        return True  # limits fall back to memory, so they never make the service unready

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and counts are this process's alone."""
        return self._redis_retry_at != 0.0

    def details(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "strategy": self.strategy_name,
            "default": [str(item) for item in self.default],
            "degraded": self.degraded,
            "fallback_total": self.fallback_total,
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
            "rate_limit_fallback_total",
            "Limit checks counted in process memory because Redis was unreachable.",
            ("backend",),
            [((self.backend,), self.fallback_total)],
        )
        yield Family(
            "gauge",
            "rate_limit_degraded",
            "1 while Redis is unreachable and each process counts alone, else 0.",
            (),
            [((), int(self.degraded))],
        )

    # -- storage --------------------------------------------------------------------
    async def _hit(self, item: RateLimitItem, key: tuple[str, ...]) -> float | None:
        """Count one request; None when allowed, else the seconds until the window resets."""
        if self._redis is None:
            return await self._hit_memory(item, key)
        if self._redis_retry_at and time.monotonic() < self._redis_retry_at:
            self.fallback_total += 1
            return await self._hit_memory(item, key)
        try:
            redis = self._redis
            allowed = await redis.hit(item, *key)
            reset_at = None if allowed else await self._reset_at(redis, item, key)
        except StorageError as exc:
            self.fallback_total += 1
            if not self._redis_retry_at:
                logger.warning(
                    "rate limit storage unreachable: counting in process memory",
                    extra={"backend": self.backend, "error": str(exc.storage_error)},
                )
            self._redis_retry_at = time.monotonic() + REDIS_RETRY_S
            return await self._hit_memory(item, key)
        if self._redis_retry_at:
            self._redis_retry_at = 0.0
            logger.warning("rate limit storage is back", extra={"backend": self.backend})
        return None if reset_at is None else max(reset_at - time.time(), 0.0)

    async def _reset_at(self, redis: Strategy, item: RateLimitItem, key: tuple[str, ...]) -> float:
        """When a refused key's window resets (epoch seconds), read from Redis."""
        if self.strategy_name == "fixed-window":
            # Only the reset is answered (remaining is 0): one read, not limits' count + expiry.
            return await redis.storage.get_expiry(item.key_for(*key))
        return (await redis.get_window_stats(item, *key)).reset_time

    async def _hit_memory(self, item: RateLimitItem, key: tuple[str, ...]) -> float | None:
        if self._counters is not None:
            return self._counters.hit(item, key)
        if await self._memory.hit(item, *key):
            return None
        stats = await self._memory.get_window_stats(item, *key)
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


def _bucket(ipv6_prefix: int, address: str) -> str:
    """An IPv4 address is its own bucket; an IPv6 one shares its network's (`2001:db8::/64`)."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    except ValueError:
        return address  # not an address (a test client's name): its own bucket, as given
