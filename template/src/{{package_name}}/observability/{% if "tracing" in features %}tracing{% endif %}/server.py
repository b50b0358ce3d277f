"""The request's server span, opened and ended by the gate.

Not opentelemetry-instrumentation-asgi: that is one more middleware layer with its own send
wrapper and a span per response message; the gate already has the request id, the route
template and the status, so the span costs only the SDK's own work (docs/tracing.md has the
figures). A request that starts a trace and is not sampled does not even pay that: the ratio
sampler's test is made here first, and only its trace and span ids are kept.
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Scope

from ...gate import route_template
from ..request_id import RequestContext
from .pipeline import PRESET_TRACE_ID

_CARRIED = (b"traceparent", b"tracestate")
_ERROR = Status(StatusCode.ERROR)
# What the SDK's ratio sampler compares with its bound, and how it flags a dropped root.
_LOW_64_BITS = TraceIdRatioBased.TRACE_ID_LIMIT
_NOT_SAMPLED = TraceFlags(TraceFlags.RANDOM_TRACE_ID)


class ServerSpans:
    """The gate's tracer: one SERVER span per request, current in the request's task.

    A caller's W3C `traceparent`/`tracestate` make the span its child and carry its sampling
    decision; without them the sampler decides. With `root_sample_ratio` (the pipeline's
    parent-based ratio sampler; None for any other) a new trace's decision is made here, on a
    trace id drawn as the SDK draws it: a dropped one becomes a non-recording span at once, a
    sampled one goes to the SDK with that trace id, on which its sampler decides alike. Each
    request runs in its own task, so the span stays current until the task ends, as the request
    context does (request_id.py).
    """

    def __init__(self, tracer: trace.Tracer, root_sample_ratio: float | None = None) -> None:
        self._tracer = tracer
        self._propagator = TraceContextTextMapPropagator()
        self._ids = RandomIdGenerator()
        self._root_bound = (
            None
            if root_sample_ratio is None
            else TraceIdRatioBased.get_bound_for_rate(root_sample_ratio)
        )

    def start(self, scope: Scope, context: RequestContext) -> None:
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in _CARRIED:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        if carrier:  # most requests carry none: no parsing at all then
            self._start_span(scope, context, self._propagator.extract(carrier))
            return
        if self._root_bound is None:
            self._start_span(scope, context, None)
            return
        trace_id = self._ids.generate_trace_id()
        if trace_id & _LOW_64_BITS >= self._root_bound:
            # Not recorded: only the ids, so the calls it makes carry the trace on, unsampled.
            span_context = SpanContext(
                trace_id, self._ids.generate_span_id(), is_remote=False, trace_flags=_NOT_SAMPLED
            )
            otel_context.attach(trace.set_span_in_context(NonRecordingSpan(span_context)))
            return
        token = PRESET_TRACE_ID.set(trace_id)
        try:
            self._start_span(scope, context, None)
        finally:
            PRESET_TRACE_ID.reset(token)

    def _start_span(self, scope: Scope, context: RequestContext, parent: Context | None) -> None:
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
