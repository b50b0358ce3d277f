"""The generated service plus one slow route, for the `overload` scenario.

Runs on the generated project's interpreter (like baseline.py, it imports nothing from
Bulwark); the harness names the project's package in BULWARK_PACKAGE and sets the service's
shedding settings through its usual environment variables.
"""

import asyncio
import importlib
import os

SLOW_S = float(os.environ.get("BULWARK_SLOW_S", "0.05"))
# What makes the route slow and bounded: a pool of N connections, each held SLOW_S.
POOL = asyncio.Semaphore(int(os.environ.get("BULWARK_SLOW_POOL", "8")))

app = importlib.import_module(f"{os.environ['BULWARK_PACKAGE']}.main").create_app()


async def slow() -> dict[str, str]:
    """Stands for real work that waits on I/O: capacity = in-flight cap / SLOW_S."""
    async with POOL:
        await asyncio.sleep(SLOW_S)
    return {"status": "ok"}


app.add_api_route("/slow", slow, methods=["GET"])
