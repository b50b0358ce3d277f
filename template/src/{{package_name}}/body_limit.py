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
        # Per-request state lives in this closure; the route is known only once the app reads.
        max_bytes = -1
        timeout_s = 0.0
        deadline = 0.0
        received = 0
        complete = False

        async def bounded_receive() -> Message:
            nonlocal max_bytes, timeout_s, deadline, received, complete
            if complete:
                return await receive()  # after the body: the disconnect a response waits for
            if max_bytes < 0:
                max_bytes, timeout_s = self._limits(scope)
                declared = _content_length(scope)
                if declared is not None and declared > max_bytes:
                    raise BodyTooLarge(max_bytes)
                deadline = asyncio.get_running_loop().time() + timeout_s
            timer = asyncio.timeout_at(deadline)
            try:
                async with timer:
                    message = await receive()
            except TimeoutError:
                if timer.expired():
                    raise BodyTimeout(timeout_s) from None
                raise
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(max_bytes)
                complete = not message.get("more_body", False)
            else:
                complete = True  # http.disconnect: nothing more will come
            return message

        return bounded_receive

    def _limits(self, scope: Scope) -> tuple[int, float]:
        """The matched route's own bounds where it sets them, else the service's."""
        route_bytes = getattr(scope.get("route"), "max_body_size", None)
        route_timeout = getattr(scope.get("endpoint"), _TIMEOUT_ATTRIBUTE, None)
        return (
            self.max_bytes if route_bytes is None else route_bytes,
            self.read_timeout_s if route_timeout is None else route_timeout,
        )


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
