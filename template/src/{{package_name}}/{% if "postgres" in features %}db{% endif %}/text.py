"""Text PostgreSQL can store, refused at validation when it cannot (422, not a driver error).

A `text` value cannot hold NUL (U+0000), and an unpaired surrogate (valid JSON: `"\\ud800"`) has
no UTF-8 encoding; either would reach the driver and fail there. Use `PgText` for every string
field a request model sends to the database.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _storable(value: str) -> str:
    if _UNSTORABLE.search(value) is not None:
        raise PydanticCustomError(
            "text_not_storable", "Text must not contain NUL characters or unpaired surrogates"
        )
    return value


PgText = Annotated[str, AfterValidator(_storable)]
