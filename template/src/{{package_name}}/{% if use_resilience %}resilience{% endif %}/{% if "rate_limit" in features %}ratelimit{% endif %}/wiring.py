"""The rate_limit feature: the default limit as a guard, before load shedding (main.FEATURES)."""

from __future__ import annotations

from ...settings import Settings
from ...wiring import Parts
from .limiter import RateLimiter


def wire(settings: Settings, parts: Parts) -> None:
    limiter = RateLimiter(
        default=settings.rate_limit_default or None,
        strategy=settings.rate_limit_strategy,
        redis_url=settings.redis_url,
        redis_timeout_s=settings.rate_limit_redis_timeout_s,
        ipv6_prefix=settings.rate_limit_ipv6_prefix,
    )
    if settings.redis_url:  # the memory backend has nothing to open, close or check
        parts.resources.append(limiter)
    parts.guards.append(limiter)
