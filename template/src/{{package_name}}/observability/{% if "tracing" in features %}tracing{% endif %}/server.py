"""The request's server span, opened and ended by the gate.

Not opentelemetry-instrumentation-asgi: that is one more middleware layer with its own send
wrapper and a span per response message; the gate already has the request id, the route
template and the status, so the span costs only the SDK's own work (docs/tracing.md has the
figures).
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Scope

from ...gate import route_template
from ..request_id import RequestContext

_CARRIED = (b"traceparent", b"tracestate")
_ERROR = Status(StatusCode.ERROR)


class ServerSpans:
    """The gate's tracer: one SERVER span per request, current in the request's task.

    A caller's W3C `traceparent`/`tracestate` make the span its child and carry its sampling
    decision; without them the sampler decides. Each request runs in its own task, so the span
    stays current until the task ends, as the request context does (request_id.py).
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._propagator = TraceContextTextMapPropagator()

    def start(self, scope: Scope, context: RequestContext) -> None:
        parent = None
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in _CARRIED:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        if carrier:  # most requests carry none: no parsing at all then
            parent = self._propagator.extract(carrier)
        method = scope["method"]
        span = self._tracer.start_span(
            method,  # renamed at the end, once routing has found the route template
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "request_id": context.request_id,
            },
        )
        otel_context.attach(trace.set_span_in_context(span))

    def end(self, scope: Scope, status: int) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            route = route_template(scope)
            span.update_name(f"{scope['method']} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(_ERROR)
        span.end()
