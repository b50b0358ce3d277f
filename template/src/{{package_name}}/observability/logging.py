"""Log lines: JSON in production, one readable line per event in dev; formatted and written by
a listener thread, never on the event loop.

Handlers that write to a stream block the loop while the pipe is full; a queue in front of them
keeps the request path to one `put`; records are formatted and written on a thread.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import logging.handlers
import os
import queue
import sys
import time
from typing import TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from .request_id import current_request_id

_listener: logging.handlers.QueueListener | None = None
_URL_LOGGERS = ("httpx", "httpcore")
# uvicorn repeats some messages with ANSI colours as `color_message`: never a field of ours.
_NOT_FIELDS = frozenset({*RESERVED_ATTRS, "color_message", "request_id"})
# SGR codes: dim, green, yellow, red, bold red.
_LEVEL_COLOURS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}
# After writing what was queued, the listener waits this long before taking the next record:
# under load, lines are written in batches instead of one wake-up of the thread per line.
BATCH_S = 0.05


class _RequestIdFilter(logging.Filter):
    """Stamp the current request id while still in the request's own task.

    A record that names its request already (the loop monitor blaming one) keeps it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


class ConsoleFormatter(logging.Formatter):
    """One line a record for a person at a terminal: time, level, logger, message, then
    `request_id=` and the record's own fields as `key=value`; a traceback follows its line.

    A stdlib formatter because the layout is a few lines; structured console renderers
    (structlog, rich) bring their own logging pipeline with them.
    """

    def __init__(self, *, colour: bool) -> None:
        super().__init__()
        self._colour = colour

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self._colour else text

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        level = self._paint(f"{record.levelname:<7}", _LEVEL_COLOURS.get(record.levelname, "0"))
        fields = {"request_id": getattr(record, "request_id", None)}
        fields.update((k, v) for k, v in record.__dict__.items() if k not in _NOT_FIELDS)
        pairs = " ".join(
            self._paint(f"{key}=", "2") + _plain(value)
            for key, value in fields.items()
            if value is not None
        )
        line = f"{self._paint(when, '2')} {level} {self._paint(record.name, '36')}  {record.getMessage()}"
        line = f"{line}  {pairs}" if pairs else line
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def _plain(value: object) -> str:
    """`value` as it reads on a console: quoted only when it holds a space or is empty."""
    text = str(value)
    return repr(text) if not text or any(c.isspace() for c in text) else text


def _wants_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Queue records unformatted: the listener thread does the formatting."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _BatchingListener(logging.handlers.QueueListener):
    """A queue listener that wakes at most once per `BATCH_S` while lines keep coming.

    Waking per line cost the event loop a GIL hand-off each time (0.07 context switches a
    request at 1 % access-log sampling, `perf stat` on /health); a quiet service still gets
    its first line written at once.
    """

    def __init__(
        self, records: queue.SimpleQueue[logging.LogRecord], handler: logging.Handler
    ) -> None:
        super().__init__(records, handler, respect_handler_level=True)
        self._records = records

    def dequeue(self, block: bool) -> logging.LogRecord:
        if block and self._records.empty():
            time.sleep(BATCH_S)
        return self._records.get(block)


def configure_logging(level: str, service_name: str, *, readable: bool = False) -> None:
    """Route every logger, uvicorn's included, through one queue handler: JSON lines, or
    `readable` console lines (dev), on stdout.

    Safe to call again (tests build many apps): the previous listener is stopped first.
    """
    global _listener
    if _listener is not None:
        _listener.stop()

    formatter: logging.Formatter
    if readable:
        formatter = ConsoleFormatter(colour=_wants_colour(sys.stdout))
    else:
        formatter = JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"service": service_name},
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(formatter)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _DeferredQueueHandler(records)
    handler.addFilter(_RequestIdFilter())

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    # The gate writes one access line per request (sampled); uvicorn's own would double it.
    logging.getLogger("uvicorn.access").disabled = True
    # These log every outbound URL at INFO, query strings (and the keys some APIs put there)
    # included; their warnings and errors still come through.
    for name in _URL_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))

    _listener = _BatchingListener(records, stream)
    _listener.start()


def flush_logging() -> None:
    """Write every queued line and stop the listener (at shutdown and at exit)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(flush_logging)
