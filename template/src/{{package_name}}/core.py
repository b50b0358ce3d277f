"""The parts every service has, whatever its features: drain, request ids, access log, health."""

from __future__ import annotations

from .api import health
from .observability.access_log import AccessLog
from .observability.status import StatusLog
from .settings import Settings
from .shutdown import Drain
from .wiring import Parts


def wire(settings: Settings, parts: Parts) -> None:
    # First in, last out: readiness fails before anything else stops (shutdown.py).
    parts.resources.append(Drain(settings.shutdown_delay_s))
    parts.observers.append(
        AccessLog(
            sample_rate=settings.sampled_access_log_rate,
            slow_request_ms=settings.slow_request_ms,
        )
    )
    parts.stats.append(parts.in_flight)
    if settings.status_log_interval_s_effective:
        parts.internals.append(
            StatusLog(parts.counting, interval_s=settings.status_log_interval_s_effective)
        )
    parts.routers.append(health.router)
