"""The request's server span, opened and ended by the gate.

Not opentelemetry-instrumentation-asgi: that is one more middleware layer with its own send
wrapper and a span per response message; the gate already has the request id, the route
template and the status, so the span costs only the SDK's own work (docs/tracing.md has the
figures). A request the sampler would drop does not even pay that: with the pipeline's
parent-based ratio sampler the decision is made here first, as the SDK would make it (a
caller's unsampled trace is followed, a new trace is tested on a trace id drawn as the SDK
draws it), and a dropped request carries only its trace id; its span id is drawn if something
asks for it.

Nor is a dropped request's trace attached to OpenTelemetry's context (that attach cost an
unsampled request more than the rest of its tracing): it stays on the request context
(request_id.py), and `RequestRuntimeContext`, OpenTelemetry's context store here, makes it
current when something asks (propagation, a child span, an instrumented client, a log line).
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from random import getrandbits

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from starlette.types import Scope

from ...gate import route_template
from ..request_id import CURRENT, RequestContext
from .pipeline import PRESET_TRACE_ID

_ERROR = Status(StatusCode.ERROR)
_IDS = RandomIdGenerator()
# What the SDK's ratio sampler compares with its bound.
_LOW_64_BITS = TraceIdRatioBased.TRACE_ID_LIMIT
# How the SDK flags a trace it does not sample: never sampled, random-id bit as the trace's.
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_NOT_SAMPLED_RANDOM = TraceFlags(TraceFlags.RANDOM_TRACE_ID)
# The one key the OpenTelemetry API keeps the current span under.
(_SPAN_KEY,) = trace.set_span_in_context(INVALID_SPAN, Context())
# W3C `traceparent` as the SDK's propagator matches it, on the header's bytes; both headers
# are ignored beyond the propagator's lengths.
_TRACEPARENT = re.compile(
    rb"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$"
)
_TRACEPARENT_MAX = 512
_TRACESTATE_MAX = 8192


def parse_traceparent(value: bytes) -> tuple[int, int, int] | None:
    """A `traceparent`'s trace id, parent span id and flags; None when the SDK's propagator
    would ignore it (malformed, all-zero ids, version ff, or 00 with more fields)."""
    if len(value) > _TRACEPARENT_MAX:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_hex, span_hex, flags, more = match.groups()
    if version == b"ff" or (more is not None and version == b"00"):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(flags, 16)


def parse_tracestate(value: bytes | None) -> TraceState | None:
    """A `tracestate` (its lines joined by commas) as the SDK's propagator reads it."""
    if value is None or len(value) > _TRACESTATE_MAX:
        return None
    return TraceState.from_header([value.decode("latin-1")])


class UnsampledTrace(NonRecordingSpan):
    """A trace the gate did not sample, current for the request: its trace id and no more.

    Its span id and `SpanContext` (with the caller's `tracestate`, if any) are made on the first
    `get_span_context()` (an outbound call's `traceparent`, a child span, a log line), which
    most requests never make; from then on they stay the same, so every call of the request
    carries the same parent.
    """

    def __init__(
        self,
        trace_id: int,
        trace_flags: TraceFlags = _NOT_SAMPLED_RANDOM,
        tracestate: bytes | None = None,
    ) -> None:  # no super(): the context is made on demand
        self._trace_id = trace_id
        self._trace_flags = trace_flags
        self._tracestate = tracestate
        self._made: SpanContext | None = None

    def get_span_context(self) -> SpanContext:
        made = self._made
        if made is None:
            made = self._made = SpanContext(
                self._trace_id,
                _IDS.generate_span_id(),
                is_remote=False,
                trace_flags=self._trace_flags,
                trace_state=parse_tracestate(self._tracestate),
            )
        return made

    def __repr__(self) -> str:
        return f"UnsampledTrace({self.get_span_context()!r})"


class RequestRuntimeContext(ContextVarsRuntimeContext):
    """The SDK's contextvar store of the current context; with nothing attached in the task, the
    trace the gate left unsampled on the request context, made into a context when first asked."""

    def __init__(self) -> None:  # no super(): its variable would have another default
        self._nothing = Context()
        self._current_context = ContextVar(self._CONTEXT_KEY, default=self._nothing)

    def get_current(self) -> Context:
        context = self._current_context.get()
        if context is self._nothing:
            request = CURRENT.get()
            if request is not None and request.trace is not None:
                made = request.trace
                if isinstance(made, int):  # a new trace's id, as the gate drew it
                    made = request.trace = Context({_SPAN_KEY: UnsampledTrace(made)})
                return made
        return context

    def attached(self) -> bool:
        """Whether a context is attached in this task (an outer layer's, before the gate)."""
        return self._current_context.get() is not self._nothing

    @classmethod
    def install(cls) -> RequestRuntimeContext:
        """Make it OpenTelemetry's store, once per process. Private: the API reads it from
        there; the public way, `OTEL_PYTHON_CONTEXT`, is read when OpenTelemetry is imported."""
        runtime = otel_context._RUNTIME_CONTEXT
        if not isinstance(runtime, cls):
            runtime = otel_context._RUNTIME_CONTEXT = cls()
        return runtime


class ServerSpans:
    """The gate's tracer: one SERVER span per request, current in the request's task.

    A caller's W3C `traceparent`/`tracestate` (read in the gate's pass over the headers, see
    request_id.py) make the span its child and carry its sampling decision; without them the
    sampler decides. With `root_sample_ratio` (the pipeline's parent-based ratio sampler; None
    for any other) the gate decides what that sampler would drop: a caller's unsampled trace,
    and a new trace whose id, drawn as the SDK draws it, fails the ratio; both stay on the
    request context, nothing attached, and become an `UnsampledTrace` when something asks for
    the current span (`RequestRuntimeContext`). A sampled new trace goes to the SDK with that
    trace id, on which its sampler decides alike. Each request runs in its own task, so the span
    stays current until the task ends, as the request context does (request_id.py).
    """

    def __init__(self, tracer: trace.Tracer, root_sample_ratio: float | None = None) -> None:
        self._tracer = tracer
        self._root_bound = (
            None
            if root_sample_ratio is None
            else TraceIdRatioBased.get_bound_for_rate(root_sample_ratio)
        )
        self._runtime = RequestRuntimeContext.install()

    def start(self, scope: Scope, context: RequestContext) -> Span | None:
        traceparent = context.traceparent
        caller = None if traceparent is None else parse_traceparent(traceparent)
        if caller is not None:
            trace_id, span_id, flags = caller
            if flags & TraceFlags.SAMPLED or self._root_bound is None:
                parent = SpanContext(
                    trace_id,
                    span_id,
                    is_remote=True,
                    trace_flags=TraceFlags(flags),
                    trace_state=parse_tracestate(context.tracestate),
                )
                # As the propagator hands it over: the caller's span alone in a new context.
                remote = trace.set_span_in_context(NonRecordingSpan(parent), Context())
                return self._start_span(scope, context, remote)
            random_id = flags & TraceFlags.RANDOM_TRACE_ID
            span = UnsampledTrace(
                trace_id, _NOT_SAMPLED_RANDOM if random_id else _NOT_SAMPLED, context.tracestate
            )
            self._leave_unsampled(context, span)
            return None
        if self._root_bound is None:
            return self._start_span(scope, context, None)
        trace_id = getrandbits(128)  # the SDK's draw, without its call (pipeline.py handles 0)
        if trace_id & _LOW_64_BITS < self._root_bound:
            token = PRESET_TRACE_ID.set(trace_id)
            try:
                return self._start_span(scope, context, None)
            finally:
                PRESET_TRACE_ID.reset(token)
        if self._runtime.attached():
            self._leave_unsampled(context, UnsampledTrace(trace_id))
        else:
            context.trace = trace_id  # its span made if asked for (`RequestRuntimeContext`)
        return None

    def _leave_unsampled(self, context: RequestContext, span: UnsampledTrace) -> None:
        """Not recorded: only the trace current, so the calls it makes carry it on, unsampled;
        kept on the request context, or joined to the context an outer layer attached."""
        if self._runtime.attached():
            otel_context.attach(trace.set_span_in_context(span))
        else:
            context.trace = Context({_SPAN_KEY: span})

    def _start_span(self, scope: Scope, context: RequestContext, parent: Context | None) -> Span:
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
        return span

    def end(self, span: Span, scope: Scope, status: int) -> None:
        if span.is_recording():
            route = route_template(scope)
            span.update_name(f"{scope['method']} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(_ERROR)
        span.end()
