"""Values the database refuses are the client's to fix: 422, never a 500 with a traceback.

asyncpg raises `DataError` for PostgreSQL's data exceptions (SQLSTATE class 22: NUL in text, a
number out of range, text too long for its column or not a number) and for arguments it cannot
encode (an unpaired surrogate, an integer past 64 bits). Validation refuses most of these first
(`PgText`, bounds on fields); this handler answers the rest, with one warning line each.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse

from ..gate import route_template

logger = logging.getLogger(__name__)


async def data_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 that names no column, type or value: the database's message stays in the log."""
    logger.warning(
        "the database refused a value: %s",
        type(exc).__name__,
        extra={"route": route_template(request.scope), "sqlstate": getattr(exc, "sqlstate", None)},
    )
    return JSONResponse({"detail": "a value in the request cannot be stored"}, status_code=422)
