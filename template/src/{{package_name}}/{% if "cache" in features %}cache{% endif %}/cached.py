"""The cache front: read-through with single-flight, the `cached` decorator, invalidation.

Contract:
- Lookups go L1 (fresh) → L2 → loader. A value found in L2 is copied into L1 for what is left
  of its TTL; a loaded value is written to both, with its TTL shortened by up to
  `ttl_jitter` (a fraction) so keys written together do not all expire together.
- Single-flight: concurrent misses on one key share one load, run in its own task, so a caller
  that is cancelled (client gone, deadline) cancels neither the load nor the other waiters.
- None is never cached: "not found" stays visible to the next read the moment it is created.
- Redis failures never reach the caller (see l2.py). If the loader fails too, an L1 entry up
  to `max_stale_s` past its TTL is served instead; only without one does the error propagate.
- Invalidation removes the key from this process's L1 and from Redis; other replicas' L1
  copies live at most their TTL, so a short TTL bounds how stale another replica can be.
Clock: `time.monotonic()` (L1), wall clock only inside L2 envelopes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from ..observability.stats import Family
from ..redis_client import RedisClient
from ..settings import Settings
from .l1 import L1
from .l2 import L2, MISSING

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class CacheStats:
    """Plain counters (cheap on the hot path, exported at scrape time)."""

    hits_l1: int = 0
    hits_l2: int = 0
    misses: int = 0
    loads: int = 0
    load_errors: int = 0
    stale_served: int = 0
    joined_flights: int = 0


class Cache:
    """Lifespan resource: nothing to open, but its state shows in `/health/detailed`."""

    name = "cache"

    def __init__(self, settings: Settings, redis: RedisClient) -> None:
        self.default_ttl_s = settings.cache_default_ttl_s
        self.l2_ttl_s = settings.cache_l2_ttl_s
        self._jitter = settings.cache_ttl_jitter
        self._l1 = L1(
            max_entries=settings.cache_l1_max_entries, max_stale_s=settings.cache_max_stale_s
        )
        self._l2 = L2(
            redis,
            namespace=settings.cache_namespace,
            version=settings.cache_version,
            retry_after_s=settings.cache_l2_retry_after_s,
        )
        self._flights: dict[str, asyncio.Task[Any]] = {}
        # Loads that began before an invalidation of their key: their result is handed to
        # their waiters but never stored, or the old value would outlive the write.
        self._superseded: set[asyncio.Task[Any]] = set()
        self.stats = CacheStats()

    async def start(self) -> None:
        """Nothing to open: L2 uses the Redis resource's client."""

    async def stop(self) -> None:
        for flight in list(self._flights.values()):
            flight.cancel()

    async def check(self) -> bool:
        """Always ready: without Redis the cache still answers from memory."""
        return True

    def details(self) -> dict[str, object]:
        stats = self.stats
        return {
            "l1_entries": len(self._l1),
            "l2_available": self._l2.available,
            "l2_errors": self._l2.errors,
            "in_flight": len(self._flights),
            "hits_l1": stats.hits_l1,
            "hits_l2": stats.hits_l2,
            "misses": stats.misses,
            "loads": stats.loads,
            "load_errors": stats.load_errors,
            "stale_served": stats.stale_served,
        }

    def families(self) -> Iterator[Family]:
        stats = self.stats

        def counter(name: str, help_text: str, count: int) -> Family:
            return Family("counter", name, help_text, (), [((), count)])

        yield Family(
            "counter",
            "cache_hits_total",
            "Lookups answered by a fresh value, by the level that had it.",
            ("level",),
            [(("l1",), stats.hits_l1), (("l2",), stats.hits_l2)],
        )
        yield counter("cache_misses_total", "Lookups that found no fresh value.", stats.misses)
        yield counter(
            "cache_stale_served_total",
            "Lookups answered by a stale L1 value because Redis or the loader failed.",
            stats.stale_served,
        )
        yield counter("cache_loads_total", "Loader calls that returned a value.", stats.loads)
        yield counter("cache_load_errors_total", "Loader calls that raised.", stats.load_errors)
        yield counter(
            "cache_single_flight_joins_total",
            "Misses that waited for a load already under way instead of starting one.",
            stats.joined_flights,
        )
        yield Family(
            "counter",
            "cache_errors_total",
            "Failed calls to a cache level (each also pauses L2 for CACHE_L2_RETRY_AFTER_S).",
            ("level",),
            [(("l2",), self._l2.errors)],
        )
        yield Family(
            "gauge",
            "cache_entries",
            "Entries held in a cache level, stale ones within their grace included.",
            ("level",),
            [(("l1",), len(self._l1))],
        )

    async def get(self, key: str) -> Any:
        """The cached value or None; with Redis failing, L1 answers, stale within its grace."""
        entry = self._l1.get(key)
        if entry is not None and entry.fresh(time.monotonic()):
            self.stats.hits_l1 += 1
            return entry.value
        value, ttl_left = await self._l2.get(key)
        if value is not MISSING and ttl_left > 0:
            self.stats.hits_l2 += 1
            self._l1.set(key, value, self._l1_ttl(ttl_left, None))
            return value
        if entry is not None and not self._l2.available:
            self.stats.stale_served += 1
            return entry.value
        self.stats.misses += 1
        return None

    async def set(self, key: str, value: object, ttl: float | None = None) -> None:
        """Store a JSON-able value in both levels (None is ignored: it is never cached)."""
        if value is None:
            return
        ttl_s = self._jittered(ttl)
        self._l1.set(key, value, ttl_s)
        l2_ttl_s = ttl_s if self.l2_ttl_s is None else self._jittered(self.l2_ttl_s)
        await self._l2.set(key, value, l2_ttl_s)

    async def invalidate(self, key: str) -> None:
        """Forget `key` here and in Redis (remembered and replayed if Redis is down)."""
        self._l1.delete(key)
        flight = self._flights.pop(key, None)
        if flight is not None:
            self._superseded.add(flight)
        await self._l2.delete(key)

    async def get_or_load(
        self, key: str, load: Callable[[], Awaitable[T]], ttl: float | None = None
    ) -> T:
        """Read through the cache; concurrent misses on `key` share one `load()`."""
        entry = self._l1.get(key)
        if entry is not None and entry.fresh(time.monotonic()):
            self.stats.hits_l1 += 1
            return cast(T, entry.value)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().create_task(self._fill(key, load, ttl))
            self._flights[key] = flight
            flight.add_done_callback(functools.partial(self._landed, key))
        else:
            self.stats.joined_flights += 1
        return cast(T, await asyncio.shield(flight))

    def cached(
        self, *, ttl: float | None = None, key: Callable[P, str]
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorate an async function so its results are read through this cache.

        `key` receives the same arguments and returns the cache key; it must name everything
        the result depends on.
        """

        def decorate(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            @functools.wraps(function)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return await self.get_or_load(
                    key(*args, **kwargs), lambda: function(*args, **kwargs), ttl
                )

            return wrapper

        return decorate

    async def _fill(self, key: str, load: Callable[[], Awaitable[T]], ttl: float | None) -> T:
        value, ttl_left = await self._l2.get(key)
        if value is not MISSING and ttl_left > 0:
            self.stats.hits_l2 += 1
            self._l1.set(key, value, self._l1_ttl(ttl_left, ttl))
            return cast(T, value)
        self.stats.misses += 1
        try:
            loaded = await load()
        except Exception:
            self.stats.load_errors += 1
            stale = self._l1.get(key)
            if stale is None:
                raise
            self.stats.stale_served += 1
            logger.warning("cache: load failed for %r; serving the stale value", key)
            return cast(T, stale.value)
        self.stats.loads += 1
        if asyncio.current_task() not in self._superseded:
            await self.set(key, loaded, ttl)
        return loaded

    def _landed(self, key: str, flight: asyncio.Task[Any]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        self._superseded.discard(flight)
        if not flight.cancelled():
            flight.exception()  # retrieved: every waiter may have been cancelled meanwhile

    def _l1_ttl(self, l2_ttl_left: float, ttl: float | None) -> float:
        """An L1 copy of an L2 value: never past the L2 entry, nor past L1's own TTL when L2
        keeps values longer (another replica's invalidation reaches L1 only by expiry)."""
        if self.l2_ttl_s is None:
            return l2_ttl_left
        return min(l2_ttl_left, self.default_ttl_s if ttl is None else ttl)

    def _jittered(self, ttl: float | None) -> float:
        ttl_s = self.default_ttl_s if ttl is None else ttl
        # Spread expiries (never lengthen them): the TTL stays an upper bound.
        return ttl_s * (1.0 - random.random() * self._jitter)  # noqa: S311 - not security
