"""L2: values shared by every replica in Redis, as JSON (never pickle: a shared store must not
be able to run code in the reader), under `<namespace>:v<version>:<key>`.

Contract: every method answers without raising on a Redis failure. After a failure L2 is
skipped for `retry_after_s` (a dead Redis would otherwise cost a timeout on every call), then
tried again. Deletes that could not reach Redis are remembered (bounded) and replayed first
when it answers again, so an invalidation during an outage is not lost.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Final

from redis.exceptions import RedisError

from ..redis_client import RedisClient

logger = logging.getLogger(__name__)

MISSING: Final = object()
MAX_PENDING_DELETES = 10_000


class L2:
    def __init__(
        self, redis: RedisClient, *, namespace: str, version: str, retry_after_s: float
    ) -> None:
        self._redis = redis
        self._prefix = f"{namespace}:v{version}:"
        self._retry_after_s = retry_after_s
        self._skip_until = 0.0
        self._pending_deletes: dict[str, None] = {}  # insertion-ordered set
        self.errors = 0

    @property
    def available(self) -> bool:
        """Configured, and not inside the pause that follows a failure."""
        return self._redis.client is not None and time.monotonic() >= self._skip_until

    async def get(self, key: str) -> tuple[object, float]:
        """(value, seconds of TTL left) or (MISSING, 0) on a miss or when Redis fails."""
        client = self._redis.client
        if client is None or not await self._ready():
            return MISSING, 0.0
        try:
            raw = await client.get(self._prefix + key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return MISSING, 0.0
        if raw is None:
            return MISSING, 0.0
        try:
            envelope = json.loads(raw)
            return envelope["v"], float(envelope["exp"]) - time.time()
        except (ValueError, KeyError, TypeError):
            logger.warning("cache: unreadable L2 entry for %r; treated as a miss", key)
            return MISSING, 0.0

    async def set(self, key: str, value: object, ttl_s: float) -> None:
        client = self._redis.client
        if client is None or not await self._ready():
            return
        # The wall-clock expiry travels with the value, so an L1 filled from L2 never outlives
        # the L2 entry: staleness stays bounded by one TTL across replicas.
        payload = json.dumps({"v": value, "exp": time.time() + ttl_s}, separators=(",", ":"))
        try:
            await client.set(self._prefix + key, payload, px=max(int(ttl_s * 1000), 1))
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def delete(self, key: str) -> None:
        client = self._redis.client
        if client is None:
            return
        if await self._ready():
            try:
                await client.delete(self._prefix + key)
                return
            except (RedisError, OSError) as exc:
                self._failed(exc)
        self._remember_delete(key)

    async def _ready(self) -> bool:
        """Outside the pause, with every remembered delete replayed."""
        if time.monotonic() < self._skip_until:
            return False
        client = self._redis.client
        if client is None or not self._pending_deletes:
            return client is not None
        keys = list(self._pending_deletes)
        try:
            await client.delete(*(self._prefix + key for key in keys))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        for key in keys:
            self._pending_deletes.pop(key, None)
        return True

    def _remember_delete(self, key: str) -> None:
        self._pending_deletes[key] = None
        if len(self._pending_deletes) > MAX_PENDING_DELETES:
            oldest = next(iter(self._pending_deletes))
            del self._pending_deletes[oldest]
            logger.warning("cache: too many invalidations during a Redis outage; one is lost")

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self._skip_until = time.monotonic() + self._retry_after_s
        logger.warning(
            "cache: Redis failed (%s); serving from memory for %.1f s",
            type(exc).__name__,
            self._retry_after_s,
        )
