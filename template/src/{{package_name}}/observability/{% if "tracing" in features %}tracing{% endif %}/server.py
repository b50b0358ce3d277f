"""The request's server span, opened and ended by the gate.

Not opentelemetry-instrumentation-asgi: that is one more middleware layer with its own send
wrapper and a span per response message; the gate already has the request id, the route
template and the status, so the span costs only the SDK's own work (docs/tracing.md has the
figures). A request the sampler would drop does not even pay that: with the pipeline's
parent-based ratio sampler the decision is made here first, as the SDK would make it (a
caller's unsampled trace is followed, a new trace is kept with the ratio's probability and its
trace id drawn as one the ratio sampler keeps or drops alike), and a dropped request carries
only a note on its request context; its ids are drawn if something asks for them.

Nor is a dropped request's trace attached to OpenTelemetry's context (that attach cost an
unsampled request more than the rest of its tracing): `RequestRuntimeContext`, OpenTelemetry's
context store here, hands out one shared context holding `UNSAMPLED`, a span that reads the
request's trace from the request context (request_id.py) when something asks for its ids
(propagation, a child span, an instrumented client). So a request that asks nothing allocates
nothing for its trace.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from random import getrandbits, randrange
from random import random as uniform

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import (
    INVALID_SPAN,
    INVALID_SPAN_CONTEXT,
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
# The SDK's ratio sampler keeps a trace whose id's low 64 bits are below its bound. (Trace ids
# and sampling are not secrets: the SDK draws them with `random` too, hence the noqa S311s.)
_LOW_64 = 1 << 64
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


# A caller's trace the gate follows unsampled: its trace id, the flags to carry on, its
# `tracestate` (a plain tuple: a named one costs this path a Python-level constructor).
CallerTrace = tuple[int, TraceFlags, bytes | None]


def dropped_trace_id(bound: int) -> int:
    """A new trace's id the ratio sampler with `bound` drops: random, low 64 bits at or above it."""
    trace_id = 0
    while not trace_id:
        trace_id = getrandbits(64) << 64 | (bound + randrange(_LOW_64 - bound))  # noqa: S311
    return trace_id


def kept_trace_id(bound: int) -> int:
    """A new trace's id the ratio sampler with `bound` keeps: random, low 64 bits below it (0,
    rarer than one in 2**64, makes the SDK draw its own, see pipeline.py)."""
    return getrandbits(64) << 64 | randrange(bound)  # noqa: S311


class UnsampledTrace(NonRecordingSpan):
    """The current span of every request whose trace the gate left unsampled: one per process.

    It holds nothing: each time it is asked it reads the trace of the request whose task asks
    (`RequestContext.trace`) and, the first time, makes that request's `SpanContext` and keeps it
    there: a new trace's ids drawn then (its trace id one the ratio sampler drops), a caller's
    trace id, flags and `tracestate` with a span id of ours. Every call of the request then
    carries the same parent. Asked outside such a request, it is the invalid span; a context
    holding it is therefore only meaningful in the request's own task and the tasks it starts.
    """

    def __init__(self) -> None:  # no super(): its span context is the asking request's
        pass

    def get_span_context(self) -> SpanContext:
        request = CURRENT.get()
        if request is None:
            return INVALID_SPAN_CONTEXT
        left = request.trace
        if left is None:
            return INVALID_SPAN_CONTEXT
        if isinstance(left, SpanContext):  # before the caller's: both are tuples
            return left
        if isinstance(left, int):  # a new trace: the ratio sampler's bound its id failed
            made = SpanContext(
                dropped_trace_id(left),
                _IDS.generate_span_id(),
                is_remote=False,
                trace_flags=_NOT_SAMPLED_RANDOM,
            )
        else:
            trace_id, flags, tracestate = left
            made = SpanContext(
                trace_id,
                _IDS.generate_span_id(),
                is_remote=False,
                trace_flags=flags,
                trace_state=parse_tracestate(tracestate),
            )
        request.trace = made
        return made

    def __repr__(self) -> str:
        return f"UnsampledTrace({self.get_span_context()!r})"


UNSAMPLED = UnsampledTrace()
# What the store hands out while a request with an unsampled trace has nothing attached.
_UNSAMPLED_CONTEXT = Context({_SPAN_KEY: UNSAMPLED})


class RequestRuntimeContext(ContextVarsRuntimeContext):
    """The SDK's contextvar store of the current context; with nothing attached in the task and
    the request's trace left unsampled by the gate, a context with `UNSAMPLED` current in it."""

    def __init__(self) -> None:  # no super(): its variable would have another default
        self.nothing = Context()
        self.variable = ContextVar(self._CONTEXT_KEY, default=self.nothing)
        self._current_context = self.variable  # where the SDK's methods look for it

    def get_current(self) -> Context:
        context = self.variable.get()
        if context is self.nothing:
            request = CURRENT.get()
            if request is not None and request.trace is not None:
                return _UNSAMPLED_CONTEXT
        return context

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
    and a new trace not kept with the ratio's probability; either is noted on the request
    context, nothing attached, and `UNSAMPLED` makes it current when something asks. A kept
    new trace goes to the SDK with a trace id its sampler keeps too. Each request runs in its
    own task, so the span stays current until the task ends, as the request context does.
    """

    def __init__(self, tracer: trace.Tracer, root_sample_ratio: float | None = None) -> None:
        self._tracer = tracer
        self._root_bound = (
            None
            if root_sample_ratio is None
            else TraceIdRatioBased.get_bound_for_rate(root_sample_ratio)
        )
        # The share of new traces kept, as the bound makes it (0 keeps none, 1.0 every one).
        self._keep = 0.0 if self._root_bound is None else self._root_bound / _LOW_64
        runtime = RequestRuntimeContext.install()
        self._attached, self._nothing = runtime.variable.get, runtime.nothing

    def start(self, scope: Scope, context: RequestContext) -> Span | None:
        traceparent = context.traceparent
        if traceparent is not None:
            caller = parse_traceparent(traceparent)
            if caller is not None:
                return self._follow(scope, context, *caller)
        bound = self._root_bound
        if bound is None:
            return self._start_span(scope, context, None)
        if uniform() < self._keep:  # noqa: S311
            token = PRESET_TRACE_ID.set(kept_trace_id(bound))
            try:
                return self._start_span(scope, context, None)
            finally:
                PRESET_TRACE_ID.reset(token)
        self._leave_unsampled(context, bound)
        return None

    def _follow(
        self, scope: Scope, context: RequestContext, trace_id: int, span_id: int, flags: int
    ) -> Span | None:
        """A caller's trace: its span's child, sampled as the caller decided."""
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
        followed = _NOT_SAMPLED_RANDOM if random_id else _NOT_SAMPLED
        self._leave_unsampled(context, (trace_id, followed, context.tracestate))
        return None

    def _leave_unsampled(self, context: RequestContext, left: int | CallerTrace) -> None:
        """Not recorded: only the trace current, so the calls it makes carry it on, unsampled;
        noted on the request context, and joined to the context an outer layer attached."""
        context.trace = left
        if self._attached() is not self._nothing:
            otel_context.attach(trace.set_span_in_context(UNSAMPLED))

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
