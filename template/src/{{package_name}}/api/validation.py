"""Invalid bodies cost little: JSON parsed with a depth bound, 422 answers kept small.

The standard library's `json.loads` finds a 100 000-deep array too deep only at its own
recursion limit, 3-8 ms of the event loop per 200 kB body (measured here): a flood of them
held every other request behind it. `JsonBodyRoute` parses bodies with pydantic-core's parser
instead, which refuses nesting past 200 levels within microseconds.

FastAPI's own 422 handler returns every error with the `input` it failed on: an invalid 7 MB
array came back as a 6.6 MB 422, encoded on the event loop. This one keeps each error's
location, type and message, shows the input only when it is a short scalar, and lists at most
`MAX_ERRORS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, cast

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic_core import from_json

MAX_ERRORS = 20
# Longest string kept from an input, a message or a location part, and most location parts.
MAX_TEXT = 100
MAX_DEPTH = 10
# Integers beyond 64 bits are dropped rather than written out (Python allows 4300 digits).
INT_BOUND = 2**64


class BoundedJsonRequest(Request):
    """A request whose JSON body is read by pydantic-core: deep nesting is refused at once.

    Strict UTF-8 JSON: a lone surrogate escape or a byte order mark, which `json.loads`
    accepts, is invalid here too. Any refusal is FastAPI's `json_invalid` 422.
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = from_json(body)
            except ValueError as exc:  # FastAPI answers this one with its `json_invalid` 422
                raise json.JSONDecodeError(str(exc), "", 0) from None
        return self._json


class JsonBodyRoute(APIRoute):
    """Routes whose JSON bodies are read with `BoundedJsonRequest`: a router taking bodies is
    made with `APIRouter(route_class=JsonBodyRoute)`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            return await handle(BoundedJsonRequest(request.scope, request.receive))

        return bounded


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def _location_part(part: object) -> str | int:
    return part if isinstance(part, int) else _short(str(part))


def _bounded(error: Mapping[str, Any]) -> dict[str, Any]:
    location = error.get("loc", ())
    bounded: dict[str, Any] = {
        "type": str(error.get("type", "")),
        "loc": [_location_part(part) for part in location[:MAX_DEPTH]],
        "msg": _short(str(error.get("msg", ""))),
    }
    value = error.get("input")
    if isinstance(value, str):
        bounded["input"] = _short(value)
    elif isinstance(value, bool | float) or (isinstance(value, int) and abs(value) < INT_BOUND):
        bounded["input"] = value
    return bounded


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 shape (`{"detail": [{"type", "loc", "msg", "input"?}]}`), bounded; when
    errors were left out, `errors_omitted` counts them."""
    errors = cast(RequestValidationError, exc).errors()
    content: dict[str, Any] = {"detail": [_bounded(error) for error in errors[:MAX_ERRORS]]}
    if len(errors) > MAX_ERRORS:
        content["errors_omitted"] = len(errors) - MAX_ERRORS
    # ASCII JSON: a lone surrogate the client sent (valid in JSON, not in UTF-8) stays escaped.
    return Response(json.dumps(content), status_code=422, media_type="application/json")
