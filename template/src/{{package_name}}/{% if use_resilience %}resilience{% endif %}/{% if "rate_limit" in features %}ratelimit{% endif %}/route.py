"""`@rate_limit("10/minute")`: a route's own limit per client, on top of the default one."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from ...gate import route_template
from .limiter import current_limiter, parse_limits

F = TypeVar("F", bound=Callable[..., Any])


def rate_limit(spec: str) -> Callable[[F], F]:
    """Give a route its own limit per client (`"10/minute"`); put it under the route decorator.

    Checked after routing and dependencies, before the endpoint; needs the `RateLimiter` in the
    gate (without it the route runs unlimited). A sync endpoint still runs in the threadpool.
    """
    items = parse_limits(spec)

    def decorate(endpoint: F) -> F:
        is_async = inspect.iscoroutinefunction(endpoint)

        @functools.wraps(endpoint)
        async def limited(*args: Any, **kwargs: Any) -> Any:
            current = current_limiter.get()
            if current is not None:
                limiter, client, scope = current
                await limiter.hit_route(items, route_template(scope), client)
            if is_async:
                return await endpoint(*args, **kwargs)
            return await run_in_threadpool(endpoint, *args, **kwargs)

        return limited  # type: ignore[return-value]

    return decorate
