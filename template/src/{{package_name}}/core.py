"""The parts every service has, whatever its features: drain, request ids, access log, health,
bounded request headers and bodies and bounded 422 answers."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from .api import health
from .api.validation import validation_error_handler
from .body_limit import BodyLimit
from .client_address import ClientAddress
from .header_limit import HeaderLimit
from .observability.access_log import AccessLog
from .observability.request_id import RequestContext
from .observability.status import StatusLog
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
    drain = Drain(settings.shutdown_delay_s)
    parts.resources.append(drain)
    parts.observers.append(
        AccessLog(
            sample_rate=settings.sampled_access_log_rate,
            slow_request_ms=settings.slow_request_ms,
        )
    )
    parts.client_address = ClientAddress(settings.forwarded_allow_ips, settings.forwarded_header)
    parts.header_sources.append(SecurityHeaders())
    parts.stats.append(parts.in_flight)
    if settings.status_log_interval_s_effective:
        parts.internals.append(
            StatusLog(parts.counting, interval_s=settings.status_log_interval_s_effective)
        )
    parts.routers.append(health.router)
    parts.state["readiness"] = health.Readiness(settings.ready_cache_s, drain)
    # First guard: the cheapest refusal, before any feature's guard counts the request.
    parts.guards.append(HeaderLimit(settings.max_header_bytes))
    parts.body = BodyLimit(settings.max_body_bytes, settings.body_read_timeout_s)
    parts.exception_handlers[RequestValidationError] = validation_error_handler
