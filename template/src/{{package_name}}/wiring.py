"""How features join the service: each adds its parts to one `Parts`, once, at start.

A feature is a module with a `wire(settings, parts)` function. `create_app` calls those of the
features this service was generated with, in order, then hands the parts to FastAPI and the
gate. Wiring runs once per app; nothing here runs per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .client_address import ClientAddress
from .gate import BodyReader, Guard, HeaderSource, Observer, Timer, Tracer
from .lifespan import Resource
from .observability.in_flight import InFlight
from .observability.request_id import RequestIds
from .observability.stats import StatsSource

T = TypeVar("T")
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


@dataclass(eq=False)
class Parts:
    """What the wired features contribute; read by `create_app` once they are all wired."""

    # Checked by /ready; started together, stopped in reverse order: dependents last in.
    resources: list[Resource] = field(default_factory=list)
    # In-process machinery the lifespan runs: reported by /health/detailed, not by /ready.
    internals: list[Resource] = field(default_factory=list)
    # Run by the gate in this order before routing; probes skip them. Cheapest refusal first:
    # a guard that refuses without waiting comes before one that may hold a slot (main.FEATURES).
    guards: list[Guard] = field(default_factory=list)
    observers: list[Observer] = field(default_factory=list)
    header_sources: list[HeaderSource] = field(default_factory=list)
    timer: Timer | None = None
    # Bounds each request body as the app reads it (core wires body_limit.py's).
    body: BodyReader | None = None
    # Opens each request's server span (the tracing feature), or none.
    tracer: Tracer | None = None
    # Counting parts that are none of the above (the in-flight gauge, build info).
    stats: list[StatsSource] = field(default_factory=list)
    routers: list[APIRouter] = field(default_factory=list)
    exception_handlers: dict[type[Exception], ExceptionHandler] = field(default_factory=dict)
    # Set on `app.state` under these names, for routes and dependencies to reach.
    state: dict[str, object] = field(default_factory=dict)
    request_ids: RequestIds = field(default_factory=RequestIds)
    # Who each request's client is (the trusted-proxy rule), applied by the gate first.
    client_address: ClientAddress | None = None
    in_flight: InFlight = field(default_factory=InFlight)

    def find(self, kind: type[T]) -> T:
        """The part of type `kind` a feature wired earlier (the cache needs the Redis client)."""
        for part in (*self.resources, *self.internals, *self.guards):
            if isinstance(part, kind):
                return part
        raise LookupError(f"no {kind.__name__} wired before this feature")

    def counting(self) -> list[StatsSource]:
        """Every part that counts something, each once (the rate limiter may be two parts)."""
        parts = dict.fromkeys([*self.stats, *self.resources, *self.internals, *self.guards])
        return [part for part in parts if isinstance(part, StatsSource)]
