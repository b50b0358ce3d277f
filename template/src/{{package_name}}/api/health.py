"""Liveness and readiness probes.

`/health` does no I/O, so a slow database never gets a healthy process restarted; `/ready`
checks every resource, so traffic only reaches replicas that can serve it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..lifespan import Resource

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process and its event loop answer."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(request: Request) -> JSONResponse:
    """Readiness: every resource answers its check (run concurrently)."""
    resources: Sequence[Resource] = request.app.state.resources
    results = await asyncio.gather(*(resource.check() for resource in resources))
    checks = {
        resource.name: "ok" if ok else "failing"
        for resource, ok in zip(resources, results, strict=True)
    }
    ready = all(results)
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
