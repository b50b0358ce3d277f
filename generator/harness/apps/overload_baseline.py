"""Bare FastAPI with overload_service.py's slow route: what overload does without shedding."""

import asyncio
import os

from fastapi import FastAPI  # type: ignore[import-not-found,unused-ignore]

SLOW_S = float(os.environ.get("BULWARK_SLOW_S", "0.05"))
# What makes the route slow and bounded: a pool of N connections, each held SLOW_S.
POOL = asyncio.Semaphore(int(os.environ.get("BULWARK_SLOW_POOL", "8")))

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/slow")
async def slow() -> dict[str, str]:
    async with POOL:
        await asyncio.sleep(SLOW_S)
    return {"status": "ok"}
