"""Request bodies are bounded before they are read: size (413) and read time (408).

Contract:
- Nothing happens until the app asks for the body: the gate hands the app a wrapped `receive`,
  and requests whose body is never read (every GET of the template) pay for that wrapper only.
- Size: a `Content-Length` over the limit is refused before a byte is read (a client sending
  `Expect: 100-continue` never sends its body); a body without one (chunked) is counted as it
  arrives and refused the moment the count passes the limit, nothing after it read.
- Read time: the whole body must arrive within `read_timeout_s` of the app's first read, or the
  request ends with 408. Clock: the event loop's (`loop.time()`, monotonic). The wait is
  bounded by `asyncio.timeout_at` in the request's own task: a cancellation that is not ours
  (the request deadline, shutdown) propagates untouched.
- Both refusals are `HTTPException`s raised from `receive`, so FastAPI answers them as JSON,
  with `Connection: close`: the rest of the body is never read, the connection not reused.
- Per route: FastAPI's own `max_body_size=` on the route decorator replaces the limit for that
  route, and `@body_timeout(seconds)` its read time (docs/requests.md).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TypeVar

from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope

F = TypeVar("F", bound=Callable[..., object])

# Set on an endpoint by `@body_timeout`, read when its request's body is first read.
_TIMEOUT_ATTRIBUTE = "__body_timeout_s__"
_CLOSE = {"Connection": "close"}


class BodyTooLarge(HTTPException):
    """413: the body is (or says it is) larger than the route accepts."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes", _CLOSE)


class BodyTimeout(HTTPException):
    """408: the body did not arrive within the read time."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"request body not received within {timeout_s:g} s", _CLOSE)


class _Reading:
    """One request's body as the app reads it: its bounds and how much has arrived."""

    __slots__ = ("complete", "deadline", "max_bytes", "received", "timeout_s")

    def __init__(self, max_bytes: int, timeout_s: float, deadline: float) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.deadline = deadline
        self.received = 0
        self.complete = False


class BodyLimit:
    """The gate's body bound: `wrap(scope, receive)` gives the app a `receive` that enforces it."""

    def __init__(self, max_bytes: int, read_timeout_s: float) -> None:
        if max_bytes < 0 or read_timeout_s <= 0:
            raise ValueError(
                "max_bytes must not be negative and read_timeout_s must be positive, got "
                f"max_bytes={max_bytes}, read_timeout_s={read_timeout_s}"
            )
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    def wrap(self, scope: Scope, receive: Receive) -> Receive:
        # Made for every request, most of which never read a body: a partial over an empty list
        # costs ~0.5 µs less than a closure holding the state (measured here); the state comes
        # with the first read, once routing has found the route and its own bounds.
        return functools.partial(self._receive, [], scope, receive)

    async def _receive(self, state: list[_Reading], scope: Scope, receive: Receive) -> Message:
        if not state:
            state.append(self._start(scope))
        reading = state[0]
        if reading.complete:
            return await receive()  # after the body: the disconnect a response waits for
        timer = asyncio.timeout_at(reading.deadline)
        try:
            async with timer:
                message = await receive()
        except TimeoutError:
            if timer.expired():
                raise BodyTimeout(reading.timeout_s) from None
            raise
        if message["type"] == "http.request":
            reading.received += len(message.get("body", b""))
            if reading.received > reading.max_bytes:
                raise BodyTooLarge(reading.max_bytes)
            reading.complete = not message.get("more_body", False)
        else:
            reading.complete = True  # http.disconnect: nothing more will come
        return message

    def _start(self, scope: Scope) -> _Reading:
        """The matched route's own bounds where it sets them, else the service's; a declared
        length over them is refused here, before a byte is read."""
        route_bytes = getattr(scope.get("route"), "max_body_size", None)
        route_timeout = getattr(scope.get("endpoint"), _TIMEOUT_ATTRIBUTE, None)
        max_bytes = self.max_bytes if route_bytes is None else route_bytes
        timeout_s = self.read_timeout_s if route_timeout is None else route_timeout
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            raise BodyTooLarge(max_bytes)
        return _Reading(max_bytes, timeout_s, asyncio.get_running_loop().time() + timeout_s)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one; if not, the count still holds
    return None


def body_timeout(seconds: float) -> Callable[[F], F]:
    """Give one route its own body read time; put it under the route decorator:
    `@router.post(..., max_body_size=...)` then `@body_timeout(300)` then the function.

    The endpoint is returned as it is (only marked), so it costs nothing per call.
    """
    if seconds <= 0:
        raise ValueError(f"body read time must be positive, got {seconds}")

    def mark(endpoint: F) -> F:
        setattr(endpoint, _TIMEOUT_ATTRIBUTE, seconds)
        return endpoint

    return mark
