"""The process's tracer provider and its export: sampled spans batched to an OTLP/HTTP endpoint.

Contract:
- The request path only appends a finished span to a bounded queue; encoding and the HTTP
  export run on the batch processor's own thread, each export bounded by
  `TRACING_EXPORT_TIMEOUT_S` (its retries included), so the event loop never waits for the
  collector.
- A full queue or a failed export drops spans, counted by reason (`details()`, and the
  `tracing_spans_dropped_total` metric with the metrics feature); the SDK's own warning per
  dropped span is silenced, since a dead collector under load would log one line per request.
- One provider per process, made by the first app and set as OpenTelemetry's global one (the
  API allows it to be set once), so spans made with `trace.get_tracer(...)` in routes and by the
  instrumented clients join the request's trace. Later apps in the same process (tests) share
  it.
- `stop()` exports what is queued within the export timeout, on a thread; the provider is shut
  down at process exit.
- The standard variables win over the service's settings when set: `OTEL_TRACES_SAMPLER`
  (and `_ARG`), `OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`),
  `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`; `OTEL_SDK_DISABLED=true` turns tracing off.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Sequence
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from ...settings import Settings
from ..stats import Family

logger = logging.getLogger(__name__)

# The SDK logs a warning per span dropped from a full queue; ours are counted instead.
logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)
MAX_EXPORT_BATCH = 512
# The trace id of the root span being started, when the gate drew it to sample first (server.py).
PRESET_TRACE_ID: ContextVar[int | None] = ContextVar("preset_trace_id", default=None)


def disabled_by_environment() -> bool:
    """`OTEL_SDK_DISABLED=true`, the standard switch, as the SDK itself reads it."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _set(*names: str) -> bool:
    """Whether one of the variables is set: the SDK then reads it instead of our setting."""
    return any(os.environ.get(name) for name in names)


def otlp_endpoint(configured: str) -> str:
    """Where spans go: the OTEL_* variable when set (the base one gets the signal's path)."""
    if traces := os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return traces
    if base := os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return base.rstrip("/") + "/v1/traces"
    return configured


class SpanCounts:
    """Spans handed to export, exported and dropped; written by the loop and the export thread,
    each field by one of them only."""

    __slots__ = ("export_failed", "exported", "queue_full", "queued", "submitted")

    def __init__(self) -> None:
        self.queued = 0  # loop thread: accepted into the queue
        self.queue_full = 0  # loop thread
        self.submitted = 0  # export thread: taken off the queue
        self.exported = 0  # export thread
        self.export_failed = 0  # export thread

    @property
    def waiting(self) -> int:
        return self.queued - self.submitted


class _CountingExporter(SpanExporter):
    """Counts what the wrapped exporter sent and what it failed to send."""

    def __init__(self, exporter: SpanExporter, counts: SpanCounts) -> None:
        self._exporter = exporter
        self._counts = counts

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        counts = self._counts
        counts.submitted += len(spans)
        result = self._exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            counts.exported += len(spans)
        else:
            counts.export_failed += len(spans)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class _PresetTraceIds(RandomIdGenerator):
    """The SDK's random ids, but a root's trace id is `PRESET_TRACE_ID` when set (and valid)."""

    def generate_trace_id(self) -> int:
        return PRESET_TRACE_ID.get() or super().generate_trace_id()


class _BoundedBatchProcessor(BatchSpanProcessor):
    """The SDK's batch processor with its queue bound checked here, so drops are counted."""

    def __init__(
        self,
        exporter: SpanExporter,
        counts: SpanCounts,
        *,
        max_queue_size: int,
        schedule_delay_millis: float | None,
    ) -> None:
        super().__init__(
            exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=min(MAX_EXPORT_BATCH, max_queue_size),
        )
        self._counts = counts
        self._max_queue_size = max_queue_size

    def on_end(self, span: ReadableSpan) -> None:
        counts = self._counts
        if counts.waiting >= self._max_queue_size:
            counts.queue_full += 1
            return
        counts.queued += 1
        super().on_end(span)


class TracingPipeline:
    """Internal lifespan part: the process's provider, its counts, the flush at stop."""

    name = "tracing"
    _current: TracingPipeline | None = None

    def __init__(
        self,
        *,
        service_name: str,
        sample_ratio: float,
        endpoint: str,
        export_timeout_s: float,
        export_interval_s: float,
        max_queue_size: int,
    ) -> None:
        self.counts = SpanCounts()
        self._flush_timeout_s = export_timeout_s
        self.sampler_name = os.environ.get("OTEL_TRACES_SAMPLER") or (
            f"parentbased_traceidratio {sample_ratio}"
        )
        # The ratio of new traces the gate may decide itself; None: another sampler decides.
        self.root_sample_ratio = None if _set("OTEL_TRACES_SAMPLER") else sample_ratio
        self.endpoint = otlp_endpoint(endpoint)
        exporter = OTLPSpanExporter(
            endpoint=self.endpoint,
            timeout=None
            if _set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
            else export_timeout_s,
        )
        processor = _BoundedBatchProcessor(
            _CountingExporter(exporter, self.counts),
            self.counts,
            max_queue_size=int(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") or max_queue_size),
            schedule_delay_millis=None
            if _set("OTEL_BSP_SCHEDULE_DELAY")
            else export_interval_s * 1000,
        )
        self.provider = TracerProvider(
            sampler=None
            if _set("OTEL_TRACES_SAMPLER")
            else ParentBased(TraceIdRatioBased(sample_ratio)),
            resource=Resource.create(
                {} if _set("OTEL_SERVICE_NAME") else {"service.name": service_name}
            ),
            id_generator=_PresetTraceIds(),
        )
        self.provider.add_span_processor(processor)

    @classmethod
    def from_settings(cls, settings: Settings) -> TracingPipeline:
        return cls(
            service_name=settings.service_name,
            sample_ratio=settings.tracing_sample_ratio,
            endpoint=settings.tracing_otlp_endpoint,
            export_timeout_s=settings.tracing_export_timeout_s,
            export_interval_s=settings.tracing_export_interval_s,
            max_queue_size=settings.tracing_max_queue_size,
        )

    @classmethod
    def for_process(cls, settings: Settings) -> TracingPipeline:
        """The process's pipeline: made from the first app's settings unless installed."""
        current = cls._current
        if current is None:
            current = cls.from_settings(settings)
            cls.install(current)
        return current

    @classmethod
    def install(cls, pipeline: TracingPipeline, *, make_global: bool = True) -> None:
        """Make `pipeline` the process's, and its provider the global one unless told not to
        (tests install theirs before any app is built)."""
        cls._current = pipeline
        if make_global:
            trace.set_tracer_provider(pipeline.provider)

    def tracer(self, name: str) -> trace.Tracer:
        return self.provider.get_tracer(name)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        # Bounded: with the collector down, a flush would wait out every queued batch's timeout.
        try:
            async with asyncio.timeout(self._flush_timeout_s):
                await asyncio.to_thread(self.provider.force_flush)
        except TimeoutError:
            logger.warning("tracing: spans still queued at stop were not exported")

    async def check(self) -> bool:
        return True  # a collector outage costs spans, never readiness

    def details(self) -> dict[str, object]:
        counts = self.counts
        return {
            "endpoint": self.endpoint,
            "sampler": self.sampler_name,
            "exported": counts.exported,
            "waiting": counts.waiting,
            "dropped": {"queue_full": counts.queue_full, "export_failed": counts.export_failed},
        }

    def families(self) -> Iterable[Family]:
        counts = self.counts
        yield Family(
            "counter",
            "tracing_spans_exported_total",
            "Sampled spans the collector accepted.",
            (),
            [((), counts.exported)],
        )
        yield Family(
            "counter",
            "tracing_spans_dropped_total",
            "Sampled spans never exported: the queue was full, or the export failed.",
            ("reason",),
            [(("queue_full",), counts.queue_full), (("export_failed",), counts.export_failed)],
        )
