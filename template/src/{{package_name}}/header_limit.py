"""Request headers are bounded: 431 when their total size passes the limit.

uvicorn's httptools parser accepts header lines of any size, so a service reached without nginx
in front would otherwise answer a megabyte of headers like any request. Contract:
- Size: the sum of every header name and value, in bytes, as the server parsed them.
- A guard, first of all (`core` wires it before any feature), so an oversized request is
  refused before it costs a counter, a slot or a route; probes skip guards and are answered.
- The refusal closes the connection: a client sending such headers is not kept.
"""

from __future__ import annotations

from starlette.types import Scope

from .gate import Rejection


class HeaderLimit:
    """Guard refusing requests whose headers total more than `max_bytes` (431)."""

    __slots__ = ("max_bytes", "rejection")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.rejection = Rejection(
            431,
            f"request headers larger than {max_bytes} bytes",
            ((b"connection", b"close"),),
        )

    async def admit(self, scope: Scope) -> Rejection | None:
        size = 0
        for name, value in scope["headers"]:
            size += len(name) + len(value)
        return self.rejection if size > self.max_bytes else None

    def release(self, scope: Scope) -> None:
        """Nothing held."""
