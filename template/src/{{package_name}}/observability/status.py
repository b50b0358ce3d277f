"""A status line every interval: requests and their rate, p95, in flight, pool, loop lag, breakers.

Read from the parts that already count (the same numbers /metrics exports, `Parts.counting()`),
so it costs one pass over those numbers per interval and nothing per request. It runs as a task
on the event loop and does no blocking work: the numbers are in memory, and the line goes to
the logging queue, written by the log thread. What a part does not count (no metrics feature:
no request figures; no database: no pool) is left out of the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .stats import Histogram, StatsSource

logger = logging.getLogger("status")


@dataclass(slots=True)
class Snapshot:
    """Cumulative counts at one moment, and the gauges as they stand."""

    at: float
    requests: float = 0.0
    server_errors: float = 0.0
    # Bucket bounds and counts summed over every route (or the loop's one histogram).
    durations: tuple[tuple[float, ...], list[int]] | None = None
    lag: tuple[tuple[float, ...], list[int]] | None = None
    stalls: float = 0.0
    gauges: dict[str, object] = field(default_factory=dict)


def take(sources: Iterable[StatsSource], at: float) -> Snapshot:
    """Read every source's families once; only the ones the line reports are kept."""
    snap = Snapshot(at)
    pool: dict[str, object] = {}
    breakers: dict[str, str] = {}
    for source in sources:
        for family in source.families():
            name = family.name
            if name == "http_requests_total":
                for labels, value in family.values:
                    if isinstance(value, int | float):
                        snap.requests += value
                        if labels[-1].startswith("5"):
                            snap.server_errors += value
            elif name == "http_request_duration_seconds":
                snap.durations = _summed(h for _, h in family.values if isinstance(h, Histogram))
            elif name == "event_loop_lag_seconds":
                snap.lag = _summed(h for _, h in family.values if isinstance(h, Histogram))
            elif name == "event_loop_stalls_total":
                snap.stalls = sum(v for _, v in family.values if isinstance(v, int | float))
            elif name == "http_requests_in_flight":
                snap.gauges["in_flight"] = family.values[0][1] if family.values else 0
            elif name == "db_pool_connections":
                pool.update({labels[0]: value for labels, value in family.values})
            elif name == "db_pool_waiting":
                pool["waiting"] = family.values[0][1] if family.values else 0
            elif name == "circuit_breaker_state":
                breakers.update({b: state for (b, state), value in family.values if value == 1})
    if pool:
        snap.gauges["pool"] = pool
    if breakers:
        snap.gauges["breakers"] = breakers
    return snap


def _summed(histograms: Iterable[Histogram]) -> tuple[tuple[float, ...], list[int]] | None:
    total: tuple[tuple[float, ...], list[int]] | None = None
    for histogram in histograms:
        if total is None:
            total = (histogram.bounds, list(histogram.counts))
        else:
            total[1][:] = [a + b for a, b in zip(total[1], histogram.counts, strict=True)]
    return total


def summary(before: Snapshot, now: Snapshot) -> dict[str, object]:
    """The line's fields for the interval between two snapshots."""
    elapsed = max(now.at - before.at, 1e-9)
    fields: dict[str, object] = {"interval_s": round(elapsed, 3)}
    if now.durations is not None:
        requests = now.requests - before.requests
        fields["requests"] = int(requests)
        fields["requests_per_s"] = round(requests / elapsed, 2)
        fields["server_errors"] = int(now.server_errors - before.server_errors)
        fields["p95_ms"] = _p95_ms(before.durations, now.durations)
    fields.update(now.gauges)
    if now.lag is not None:
        fields["loop_lag_p95_ms"] = _p95_ms(before.lag, now.lag)
        fields["loop_stalls"] = int(now.stalls - before.stalls)
    return fields


def _p95_ms(
    before: tuple[tuple[float, ...], list[int]] | None,
    now: tuple[tuple[float, ...], list[int]],
) -> float | None:
    """Upper bound of the bucket holding the interval's 95th percentile, in ms; None when the
    interval saw nothing, or when it lies past the last bound."""
    bounds, counts = now
    if before is not None:
        counts = [a - b for a, b in zip(counts, before[1], strict=True)]
    total = sum(counts)
    if total <= 0:
        return None
    running = 0
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        running += count
        if running >= 0.95 * total:
            return None if math.isinf(bound) else round(bound * 1000.0, 3)
    return None


class StatusLog:
    """Lifespan part: the status line every `interval_s`, logged at INFO by logger `status`."""

    name = "status_log"

    def __init__(self, sources: Callable[[], Sequence[StatsSource]], *, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        # Asked at start: features wired after this part add their counters too.
        self._sources = sources
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sources = self._sources()
        self._task = asyncio.get_running_loop().create_task(self._run(sources), name="status")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self) -> bool:
        return True

    def details(self) -> dict[str, object]:
        return {"interval_s": self.interval_s}

    async def _run(self, sources: Sequence[StatsSource]) -> None:
        before = take(sources, time.monotonic())
        while True:
            await asyncio.sleep(self.interval_s)
            now = take(sources, time.monotonic())
            logger.info("status", extra=summary(before, now))
            before = now
