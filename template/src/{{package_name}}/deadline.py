"""The current request's deadline, readable by anything the request calls.

The timeout layer sets it; the database layer, outbound clients and retries read it to give up
in time instead of working for a client that has stopped waiting (DESIGN.md §4). Clock:
`time.monotonic()`. No deadline set means "no limit": `remaining()` returns None.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


def remaining() -> float | None:
    """Seconds left before the current deadline (may be negative), or None without one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


@contextmanager
def deadline_in(seconds: float) -> Iterator[float]:
    """Set a deadline `seconds` from now for the enclosed code; an outer, earlier one wins."""
    deadline = time.monotonic() + seconds
    outer = _deadline.get()
    if outer is not None:
        deadline = min(deadline, outer)
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


def set_deadline(deadline: float | None) -> Token[float | None]:
    """Replace the current deadline (the timeout layer's job, per request); undo with the token.

    Unlike `deadline_in`, a later deadline replaces an earlier one: a per-route timeout may be
    longer than the service default.
    """
    return _deadline.set(deadline)


def reset_deadline(token: Token[float | None]) -> None:
    """Restore the deadline that `set_deadline` replaced."""
    _deadline.reset(token)
