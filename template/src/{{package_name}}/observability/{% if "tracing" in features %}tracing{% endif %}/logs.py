"""`trace_id` and `span_id` on every log line written while a sampled span is current."""

from __future__ import annotations

import logging

from opentelemetry import trace

from .server import UnsampledTrace


class TraceIds(logging.Filter):
    """Stamps the ids on the record in the logging task, before the queue hands it to the
    writer thread (where no span is current); unsampled requests' lines stay as they were,
    since their ids lead to no trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        span = trace.get_current_span()
        if type(span) is UnsampledTrace:
            return True  # known unsampled: its span id is not drawn for a line that omits it
        span_context = span.get_span_context()
        if span_context.trace_flags.sampled:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        return True
