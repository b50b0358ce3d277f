"""One access line per request worth reading: errors, slow requests and a sample of the rest.

Logging every request costs more than the rest of the request path together; the metrics
feature carries the full counts.

Refusals (429 rate limited, 503 shed, breaker open, pool exhausted) are the service protecting
itself: under overload a line for each one made the refusals slow (shed p99 2.26 ms against
the < 2 ms target). They are summed instead, with at most one WARNING line per status and
`REFUSAL_LINE_INTERVAL_S` carrying how many there were since the previous line. A refusal that
happens while nothing else is refused is therefore still logged at once. Real failures (500,
502, 504...) keep one ERROR line each.
"""

from __future__ import annotations

import logging
import random
import time

logger = logging.getLogger("access")

# What the service answers when it declines work on purpose, with Retry-After.
REFUSALS = frozenset({429, 503})
REFUSAL_LINE_INTERVAL_S = 1.0


class _Refusals:
    """Refusals of one status since its last line, and when the next line may be written."""

    __slots__ = ("count", "next_line_at")

    def __init__(self) -> None:
        self.count = 0
        self.next_line_at = 0.0


class AccessLog:
    """Observer for the gate: decides which finished requests are logged."""

    def __init__(self, *, sample_rate: float, slow_request_ms: float) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be within [0, 1], got {sample_rate}")
        self._sample_rate = sample_rate
        self._slow_s = slow_request_ms / 1000.0
        self._refusals = {status: _Refusals() for status in REFUSALS}

    def finish(self, method: str, route: str, status: int, duration_s: float) -> None:
        refusals = self._refusals.get(status)
        if refusals is not None:
            self._refused(refusals, method, route, status, duration_s)
            return
        if status >= 500:
            level = logging.ERROR
        elif duration_s >= self._slow_s:
            level = logging.WARNING
        elif self._sample_rate and random.random() < self._sample_rate:  # noqa: S311 - sampling, not security
            level = logging.INFO
        else:
            return
        logger.log(
            level,
            "request",
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(duration_s * 1000.0, 3),
            },
        )

    def _refused(
        self, refusals: _Refusals, method: str, route: str, status: int, duration_s: float
    ) -> None:
        refusals.count += 1
        now = time.monotonic()
        if now < refusals.next_line_at:
            return
        refusals.next_line_at = now + REFUSAL_LINE_INTERVAL_S
        count, refusals.count = refusals.count, 0
        logger.warning(
            "requests refused",
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(duration_s * 1000.0, 3),
                "refused": count,
            },
        )
