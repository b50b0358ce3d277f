"""L1: a bounded in-process map whose entries turn stale at their TTL and leave after a grace.

cachetools' TLRUCache gives the size bound (least recently used goes first) and per-entry
expiry; an entry is kept `max_stale_s` past its TTL so the cache can still answer from it when
Redis and the loader both fail (bounded staleness). Clock: `time.monotonic()`.
Not thread-safe: used from the event loop only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cachetools import TLRUCache


@dataclass(frozen=True, slots=True)
class Entry:
    value: object
    fresh_until: float
    stale_until: float

    def fresh(self, now: float) -> bool:
        return now < self.fresh_until


def _entry_expiry(_key: str, entry: Entry, _now: float) -> float:
    return entry.stale_until


class L1:
    """Up to `max_entries` JSON-able values, fresh for their TTL, usable stale for a grace."""

    def __init__(self, *, max_entries: int, max_stale_s: float) -> None:
        self._entries: TLRUCache[str, Entry] = TLRUCache(max_entries, _entry_expiry)
        self._max_stale_s = max_stale_s

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        """The entry, fresh or stale within its grace; None once it is gone."""
        return self._entries.get(key)

    def set(self, key: str, value: object, ttl_s: float) -> None:
        now = time.monotonic()
        self._entries[key] = Entry(value, now + ttl_s, now + ttl_s + self._max_stale_s)

    def delete(self, key: str) -> None:
        self._entries.pop(key, None)
