"""The parts every service has, whatever its features: drain, request ids, access log, health,
bounded request bodies and bounded 422 answers."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from .api import health
from .api.validation import validation_error_handler
from .body_limit import BodyLimit
from .observability.access_log import AccessLog
from .settings import Settings
from .shutdown import Drain
from .wiring import Parts


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
    parts.stats.append(parts.in_flight)
    parts.routers.append(health.router)
    parts.state["readiness"] = health.Readiness(settings.ready_cache_s, drain)
    parts.body = BodyLimit(settings.max_body_bytes, settings.body_read_timeout_s)
    parts.exception_handlers[RequestValidationError] = validation_error_handler
