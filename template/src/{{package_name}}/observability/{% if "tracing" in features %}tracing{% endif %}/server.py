"""The request's server span, opened and ended by the gate.

Not opentelemetry-instrumentation-asgi: that is one more middleware layer with its own send
wrapper and a span per response message; the gate already has the request id, the route
template and the status, so the span costs only the SDK's own work (docs/tracing.md has the
figures). A request that starts a trace and is not sampled does not even pay that: the ratio
sampler's test is made here first, on a trace id drawn as the SDK draws it, and the request
carries only that id; its span id is drawn if something asks for it.
"""

from __future__ import annotations

from contextvars import ContextVar
from random import getrandbits

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
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
_IDS = RandomIdGenerator()
# What the SDK's ratio sampler compares with its bound, and how it flags a dropped root.
_LOW_64_BITS = TraceIdRatioBased.TRACE_ID_LIMIT
_NOT_SAMPLED = TraceFlags(TraceFlags.RANDOM_TRACE_ID)
# The request's span when the SDK made it, so `end` finds it without the OpenTelemetry context.
_SDK_SPAN: ContextVar[Span | None] = ContextVar("sdk_server_span", default=None)


class UnsampledTrace(NonRecordingSpan):
    """A new trace the gate did not sample, current for the request: a trace id and no more.

    Its span id and `SpanContext` are made on the first `get_span_context()` (an outbound
    call's `traceparent`, a child span, a log line), which most requests never make; from then
    on they stay the same, so every call of the request carries the same parent.
    """

    def __init__(self, trace_id: int) -> None:  # no super(): the context is made on demand
        self._trace_id = trace_id
        self._made: SpanContext | None = None

    def get_span_context(self) -> SpanContext:
        made = self._made
        if made is None:
            made = self._made = SpanContext(
                self._trace_id, _IDS.generate_span_id(), is_remote=False, trace_flags=_NOT_SAMPLED
            )
        return made

    def __repr__(self) -> str:
        return f"UnsampledTrace({self.get_span_context()!r})"


class ServerSpans:
    """The gate's tracer: one SERVER span per request, current in the request's task.

    A caller's W3C `traceparent`/`tracestate` make the span its child and carry its sampling
    decision; without them the sampler decides. With `root_sample_ratio` (the pipeline's
    parent-based ratio sampler; None for any other) a new trace's decision is made here, on a
    trace id drawn as the SDK draws it: a dropped one becomes an `UnsampledTrace` at once, a
    sampled one goes to the SDK with that trace id, on which its sampler decides alike. Each
    request runs in its own task, so the span stays current until the task ends, as the request
    context does (request_id.py).
    """

    def __init__(self, tracer: trace.Tracer, root_sample_ratio: float | None = None) -> None:
        self._tracer = tracer
        self._propagator = TraceContextTextMapPropagator()
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
        trace_id = getrandbits(128)  # the SDK's draw, without its call (pipeline.py handles 0)
        if trace_id & _LOW_64_BITS >= self._root_bound:
            # Not recorded: only the trace id, so the calls it makes carry the trace on, unsampled.
            otel_context.attach(trace.set_span_in_context(UnsampledTrace(trace_id)))
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
        _SDK_SPAN.set(span)

    def end(self, scope: Scope, status: int) -> None:
        span = _SDK_SPAN.get()
        if span is None:
            return  # an unsampled new trace: nothing was started, nothing to end
        if span.is_recording():
            route = route_template(scope)
            span.update_name(f"{scope['method']} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(_ERROR)
        span.end()
