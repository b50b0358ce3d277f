"""The parts every service has, whatever its features: drain, request ids, access log, health."""

from __future__ import annotations

from .api import health
from .client_address import ClientAddress
from .observability.access_log import AccessLog
from .observability.request_id import RequestContext
from .settings import Settings
from .shutdown import Drain
from .wiring import Parts

# Browsers must take every answer as the type it declares, never sniff one into HTML or script.
NOSNIFF = (b"x-content-type-options", b"nosniff")


class SecurityHeaders:
    """Header source adding `NOSNIFF` to every response: one list append, no per-request work."""

    def add_headers(self, headers: list[tuple[bytes, bytes]], context: RequestContext) -> None:
        headers.append(NOSNIFF)


def wire(settings: Settings, parts: Parts) -> None:
    # First in, last out: readiness fails before anything else stops (shutdown.py).
    parts.resources.append(Drain(settings.shutdown_delay_s))
    parts.observers.append(
        AccessLog(
            sample_rate=settings.sampled_access_log_rate,
            slow_request_ms=settings.slow_request_ms,
        )
    )
    parts.client_address = ClientAddress(settings.forwarded_allow_ips, settings.forwarded_header)
    parts.header_sources.append(SecurityHeaders())
    parts.stats.append(parts.in_flight)
    parts.routers.append(health.router)
