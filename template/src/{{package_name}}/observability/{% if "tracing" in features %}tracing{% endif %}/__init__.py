"""Distributed tracing on the OpenTelemetry SDK: a server span per request opened by the gate,
child spans for queries, Redis commands and outbound calls, batched OTLP/HTTP export.

Routes add spans of their own with the OpenTelemetry API as usual
(`trace.get_tracer(__name__).start_as_current_span(...)`): the provider is the global one.
"""

from __future__ import annotations

from .logs import TraceIds
from .pipeline import TracingPipeline
from .server import ServerSpans

__all__ = ["ServerSpans", "TraceIds", "TracingPipeline"]
