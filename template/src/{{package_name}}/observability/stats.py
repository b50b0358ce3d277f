"""Plain-number statistics: what the hot path and the loop monitor count into.

prometheus_client takes a lock on every operation (~8-11 µs a request for a counter, a histogram
and a gauge, measured on this service). Counting into ints and lists costs well under a microsecond; the
metrics feature turns these into Prometheus families only when scraped. Everything here is
written from the event loop's thread, so no lock is needed; readers on other threads may see a
count one step behind, never a torn value.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable


class Histogram:
    """Observations counted per bucket (`value <= bound`, last bucket is +Inf) and summed."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"bucket bounds must be strictly increasing, got {list(bounds)}")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound) pairs, ending with +Inf: Prometheus' shape."""
        pairs, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class Family:
    """One named measurement with its labelled values, ready to export."""

    kind: Kind
    name: str
    help: str
    labels: tuple[str, ...]
    values: Sequence[tuple[tuple[str, ...], float | Histogram]]


@runtime_checkable
class StatsSource(Protocol):
    """Anything that can list its measurements; called at scrape time, off the hot path."""

    def families(self) -> Iterable[Family]: ...
