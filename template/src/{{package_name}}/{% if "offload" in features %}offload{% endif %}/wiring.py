"""The offload feature: the bounded executors, their `@offload.auto` policy, a 503 when full."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from ..settings import Settings
from ..wiring import Parts
from .auto import AutoPolicy
from .pools import Offload, OffloadBusy


async def offload_busy_handler(request: Request, exc: Exception) -> JSONResponse:
    """503 + Retry-After: the pool is full now, the client should come back shortly."""
    return JSONResponse(
        {"detail": "server busy, retry shortly"}, status_code=503, headers={"Retry-After": "1"}
    )


def wire(settings: Settings, parts: Parts) -> None:
    """Executors sized by settings; their state and auto decisions in /health/detailed."""
    parts.internals.append(
        Offload(
            thread_workers=settings.offload_thread_workers,
            process_workers=settings.offload_process_workers,
            max_queued=settings.offload_max_queued,
            auto=AutoPolicy(
                samples=settings.offload_auto_samples,
                cpu_share=settings.offload_auto_cpu_share,
                min_cpu_ms=settings.offload_auto_min_cpu_ms,
                recheck_calls=settings.offload_auto_recheck_calls,
                recheck_s=settings.offload_auto_recheck_s,
            ),
        )
    )
    parts.exception_handlers[OffloadBusy] = offload_busy_handler
