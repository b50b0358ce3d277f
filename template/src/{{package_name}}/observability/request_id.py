"""Request ids: taken from a well-formed `X-Request-Id` or minted, and kept in a contextvar.

Minted ids are a random per-process prefix plus a counter: unique across replicas and restarts
for practical purposes, and ~0.45 µs to make against ~3.9 µs for `uuid4().hex` (DESIGN.md §3).
"""

from __future__ import annotations

import itertools
import re
import secrets
from contextvars import ContextVar

HEADER = b"x-request-id"
_WELL_FORMED = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")

_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served by this task, if any."""
    return _current.get()


class RequestIds:
    """Assigns each request its id; one instance per process."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def assign(self, headers: list[tuple[bytes, bytes]]) -> str:
        """Adopt the caller's id when it is well formed, mint one otherwise; bind it to the task.

        Unbounded or odd client ids would end up in every log line, so they are replaced.
        """
        for name, value in headers:
            if name == HEADER and _WELL_FORMED.fullmatch(value):
                request_id = value.decode("ascii")
                break
        else:
            request_id = f"{self._prefix}-{next(self._counter):x}"
        # No reset: every request runs in its own task, with its own copy of the context.
        _current.set(request_id)
        return request_id
