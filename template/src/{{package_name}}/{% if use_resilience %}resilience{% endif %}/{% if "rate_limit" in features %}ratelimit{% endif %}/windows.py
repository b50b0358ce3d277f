"""The in-house fixed-window counters: memory limits, and Redis's stand-in while it is down."""

from __future__ import annotations

import time

from limits import RateLimitItem

PURGE_EVERY_S = 10.0


class FixedWindowCounters:
    """Fixed windows in a plain dict, for fixed-window limits counted in process memory.

    `limits`' MemoryStorage costs ~14-20 µs a hit here (a lock, an expiry task, several awaits)
    against a ~25 µs budget for the whole stack; this costs a dict lookup. Same
    semantics as `limits`' fixed window on memory (a window opens at a key's first hit and lasts
    the item's period; refused hits count too), checked against `limits` in the tests.
    Single event loop: no await between read and write, so no lock.
    """

    def __init__(self) -> None:
        self._windows: dict[tuple[object, ...], list[float]] = {}
        self._next_purge = 0.0

    def hit(self, item: RateLimitItem, key: tuple[str, ...]) -> float | None:
        """Count one hit; None when allowed, else the seconds until the window resets."""
        now = time.monotonic()
        slot = (id(item), *key)
        window = self._windows.get(slot)
        if window is None or window[0] <= now:
            if now >= self._next_purge:
                self._purge(now)
            window = [now + item.get_expiry(), 0.0]
            self._windows[slot] = window
        window[1] += 1
        return None if window[1] <= item.amount else window[0] - now

    def _purge(self, now: float) -> None:
        """Drop ended windows, so one-off clients do not accumulate."""
        self._next_purge = now + PURGE_EVERY_S
        for key in [key for key, (ends, _) in self._windows.items() if ends <= now]:
            del self._windows[key]
