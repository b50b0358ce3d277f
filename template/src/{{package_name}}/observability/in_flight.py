"""The requests in flight: counted by the gate, read at scrape time as a gauge.

A plain int, never locked: only the event loop's thread writes it, and a scrape on another
thread may read it one step behind, never torn.
"""

from __future__ import annotations

from collections.abc import Iterator

from .stats import Family


class InFlight:
    """How many requests the gate is serving now; one per process."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def families(self) -> Iterator[Family]:
        yield Family(
            "gauge",
            "http_requests_in_flight",
            "Requests being served now.",
            (),
            [((), self.count)],
        )
