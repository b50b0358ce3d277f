"""The gate: one pure-ASGI frame that runs every per-request concern of the service.

Five middleware layers nested the usual way cost +67-77 µs a request (measured on this
service), against a budget of ~25 µs for the whole stack; so each concern stays its own module
and object, and this frame calls them in order with one `send` wrapper. Header sources add
response headers as the response starts; observers are told about every finished request,
after the response went out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi._body_limit import AppBodyLimitMiddleware  # private: only recognised, never called
from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware  # idem
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .client_address import ClientAddress
from .observability.in_flight import InFlight
from .observability.request_id import HEADER as REQUEST_ID_HEADER
from .observability.request_id import RequestContext, RequestIds

logger = logging.getLogger(__name__)


class Observer(Protocol):
    """Told about each finished request; must not block and must not raise."""

    def finish(self, method: str, route: str, status: int, duration_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Rejection:
    """A complete JSON answer sent instead of calling the app (503 shed, 429 limited...)."""

    status: int
    detail: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    # The answer's bytes, made once: under overload every shed request sends the same 503.
    _body: bytes = field(init=False, repr=False, compare=False)
    _start_headers: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        body = json.dumps({"detail": self.detail}).encode()
        object.__setattr__(self, "_body", body)
        start_headers = (
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *self.headers,
        )
        object.__setattr__(self, "_start_headers", start_headers)

    async def send(self, send: Send) -> None:
        # New messages each time: whoever sends them may set their headers (the gate does).
        await send(
            {"type": "http.response.start", "status": self.status, "headers": self._start_headers}
        )
        await send({"type": "http.response.body", "body": self._body})


class Guard(Protocol):
    """Admits a request or answers it early, before the app (and its routing) runs."""

    async def admit(self, scope: Scope) -> Rejection | None:
        """None admits the request; a rejection is sent instead, the body never read."""
        ...

    def release(self, scope: Scope) -> None:
        """Called once for every admitted request when it has finished; must not raise."""
        ...


class Timer(Protocol):
    """Bounds the app call with the request deadline (the timeout feature's `Timeouts`)."""

    def start(self, context: RequestContext) -> None:
        """Arm the request's deadline (`context.deadline`) for the current task."""
        ...

    def stop(self, context: RequestContext) -> bool:
        """Disarm right after the app call; True when the deadline cancelled the call."""
        ...


class Tracer(Protocol):
    """Opens each request's server span, current in the request's task while it runs."""

    def start(self, scope: Scope, context: RequestContext) -> Any:
        """Open the span (a caller's `traceparent` as its parent) and make it current; what
        `end` takes, or None when there is nothing to end (a trace left unsampled)."""
        ...

    def end(self, span: Any, scope: Scope, status: int) -> None:
        """Name `span` after the route template, record the status, end it; must not raise."""
        ...


TIMEOUT_REJECTION = Rejection(504, "request timed out")
# Probes and scrapes: guards never see them, so never refuse or count them (a shed /ready
# would pull a healthy replica out of rotation under load).
PROBE_PATHS = frozenset({"/health", "/ready", "/health/detailed", "/metrics"})


class BodyReader(Protocol):
    """Bounds the request body as the app reads it (size, read time); see body_limit.py."""

    def wrap(self, scope: Scope, receive: Receive) -> Receive:
        """The `receive` the app gets; called once per request, so it must be cheap."""
        ...


class HeaderSource(Protocol):
    """Adds headers to each response as it starts; must not block and must not raise."""

    def add_headers(self, headers: list[tuple[bytes, bytes]], context: RequestContext) -> None: ...


def route_template(scope: Scope) -> str:
    """The matched route's template (`/items/{item_id}`), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class Gate:
    """The service's one pure-ASGI middleware; `create_app` hands it what the features wired.

    Per request, in order: settle who the client is (`client_address.py`); assign the request
    id, open its span (with a tracer) and count the request in flight; run the guards (skipped
    for probes), the first refusal answering instead of the app; hand the app a body reader
    that bounds the body (`body_limit.py`); arm the timer's deadline and call the app, turning
    our own deadline into a 504; answer an unhandled error as a JSON 500 that names the request
    id; then release the admitted guards, end the span and tell observers.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        request_ids: RequestIds,
        in_flight: InFlight | None = None,
        observers: Sequence[Observer] = (),
        guards: Sequence[Guard] = (),
        timer: Timer | None = None,
        header_sources: Sequence[HeaderSource] = (),
        body: BodyReader | None = None,
        client_address: ClientAddress | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.app = app
        self.client_address = client_address
        self.request_ids = request_ids
        self.in_flight = in_flight if in_flight is not None else InFlight()
        self.observers = tuple(observers)
        self.guards = tuple(guards)
        self.timer = timer
        self.header_sources = tuple(header_sources)
        self.body = body
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.client_address is not None:
            self.client_address.apply(scope)

        started_at = time.monotonic()
        context = self.request_ids.assign(scope, started_at)
        tracer = self.tracer
        span = None if tracer is None else tracer.start(scope, context)
        in_flight = self.in_flight
        in_flight.count += 1
        request_id = context.request_id
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        header_sources = self.header_sources
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # A copy: a response object may be reused across requests.
                headers = [*message.get("headers", ()), id_header]
                for source in header_sources:
                    source.add_headers(headers, context)
                message["headers"] = headers
            await send(message)

        guards = () if scope["path"] in PROBE_PATHS else self.guards
        admitted = 0
        try:
            for guard in guards:
                rejection = await guard.admit(scope)
                if rejection is not None:
                    status = rejection.status
                    await rejection.send(send_with_headers)
                    return
                admitted += 1
            if self.body is not None:
                receive = self.body.wrap(scope, receive)
            timer, expired = self.timer, False
            try:
                if timer is not None:
                    timer.start(context)
                try:
                    await self.app(scope, receive, send_with_headers)
                finally:
                    # Disarmed before any other await, so the deadline can only hit the app.
                    if timer is not None:
                        expired = timer.stop(context)
            except asyncio.CancelledError:
                if not expired:
                    raise  # not our deadline: shutdown or the server's own cancellation
            if expired:
                if status:
                    # A second response cannot follow a started one: the server cuts the
                    # connection, so the client sees a truncated stream, never a "complete" one.
                    raise TimeoutError("request deadline passed after the response started")
                status = TIMEOUT_REJECTION.status
                await TIMEOUT_REJECTION.send(send_with_headers)
        except Exception:
            logger.exception("unhandled error", extra={"route": route_template(scope)})
            if status:
                raise  # the response has started: the server must cut the connection
            status = 500
            await _send_internal_error(send, request_id, id_header)
        finally:
            for guard in guards[:admitted]:
                guard.release(scope)
            if span is not None and tracer is not None:
                tracer.end(span, scope, status or 500)
            duration_s = time.monotonic() - started_at
            in_flight.count -= 1
            if self.observers:
                route = route_template(scope)
                method = scope["method"]
                for observer in self.observers:
                    observer.finish(method, route, status or 500, duration_s)


async def _send_internal_error(send: Send, request_id: str, id_header: tuple[bytes, bytes]) -> None:
    """A JSON 500 that names the request id and never leaks a stack trace."""
    body = json.dumps({"detail": "Internal Server Error", "request_id": request_id}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                id_header,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GatedApp(FastAPI):
    """FastAPI with the gate as its outermost layer, and FastAPI's own telemetry off.

    The gate observes every request (access log, metrics, spans with the tracing feature):
    FastAPI's telemetry would count, log and trace them a second time, and cost every request.
    FastAPI puts three layers outside user middleware; with the gate right inside them, each
    is a no-op that only costs a frame a request, so `build_middleware_stack` leaves them out:
    - the 500 fallback, without a handler of its own for 500 or `Exception`: the gate answers
      every unhandled error as a JSON 500 before the response starts, and after it re-raises,
      as the fallback would;
    - the telemetry exception recorder: it records only for a request FastAPI's telemetry
      observes, and that is off;
    - the app-wide body limit, without `max_body_size=`: it acts only on a mounted app's
      requests (the gate bounds bodies, body_limit.py).
    Middleware added after `create_app` sits outside the gate: then every layer is kept.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(telemetry={"tracing": False, "metrics": False, "logs": False}, **kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        layer = stack
        while not isinstance(layer, Gate):
            if not self._redundant(layer):
                return stack
            layer = layer.app  # type: ignore[attr-defined]  # each redundant kind has one
        return layer

    def _redundant(self, layer: ASGIApp) -> bool:
        if isinstance(layer, ServerErrorMiddleware):
            return layer.handler is None and not layer.debug
        if isinstance(layer, AppBodyLimitMiddleware):
            return self.max_body_size is None
        return isinstance(layer, ExceptionTelemetryMiddleware)
