"""One access line per request worth reading: errors, slow requests and a sample of the rest.

Logging every request costs more than the rest of the request path together; the metrics
feature carries the full counts (DESIGN.md §3).
"""

from __future__ import annotations

import logging
import random

logger = logging.getLogger("access")


class AccessLog:
    """Observer for the gate: decides which finished requests are logged."""

    def __init__(self, *, sample_rate: float, slow_request_ms: float) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be within [0, 1], got {sample_rate}")
        self._sample_rate = sample_rate
        self._slow_s = slow_request_ms / 1000.0

    def finish(self, method: str, route: str, status: int, duration_s: float) -> None:
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
