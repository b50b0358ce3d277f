"""The current request's deadline, readable by anything the request calls.

The timeout layer sets it on the request's context; the database layer, outbound clients and
retries read it to give up in time instead of working for a client that has stopped waiting.
`deadline_in` narrows it for a block of code. Clock: `time.monotonic()`. No deadline means
"no limit": `remaining()` returns None.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .observability.request_id import CURRENT

# Set only inside `deadline_in` blocks; the request's own deadline lives on its context, so
# arming it costs the timeout layer an attribute write rather than a context change.
_narrowed: ContextVar[float | None] = ContextVar("deadline", default=None)


def current() -> float | None:
    """The deadline in force: a `deadline_in` block's, else the request's, else None."""
    narrowed = _narrowed.get()
    if narrowed is not None:
        return narrowed
    context = CURRENT.get()
    return None if context is None else context.deadline


def remaining() -> float | None:
    """Seconds left before the current deadline (may be negative), or None without one."""
    deadline = current()
    return None if deadline is None else deadline - time.monotonic()


@contextmanager
def deadline_in(seconds: float) -> Iterator[float]:
    """Set a deadline `seconds` from now for the enclosed code; an outer, earlier one wins."""
    deadline = time.monotonic() + seconds
    outer = current()
    if outer is not None:
        deadline = min(deadline, outer)
    token = _narrowed.set(deadline)
    try:
        yield deadline
    finally:
        _narrowed.reset(token)
