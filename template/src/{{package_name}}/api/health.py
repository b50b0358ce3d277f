"""Liveness, readiness and the operators' detailed view.

`/health` does no I/O and answers a pre-encoded body, so a slow database never gets a healthy
process restarted and probes cost less than any real route; `/ready` checks every resource, so
traffic only reaches replicas that can serve it (a check is reused for about a second, so a flood
of probes is not a flood of database queries); `/health/detailed` shows internals, so it is served
only in dev, when made public, or to callers with the token.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..lifespan import Resource
from ..settings import Settings
from ..shutdown import Drain

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

# A check slower than this counts as failing: /ready must answer within the probes' 2 s timeout
# (deploy/k8s), with a clear 503 rather than a probe timeout.
READY_CHECK_TIMEOUT_S = 1.5
# Liveness has no inputs, so its answer is encoded once and reused by every probe.
_ALIVE = Response(b'{"status":"ok"}', media_type="application/json")
_PROCESS = psutil.Process()


@router.get("/health", response_model=None)
async def health() -> Response:
    """Liveness: the process and its event loop answer."""
    return _ALIVE


async def _check(resource: Resource) -> bool:
    """A resource's readiness; an error or a hang counts as not ready, never as a 500."""
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            return await resource.check()
    except Exception:
        logger.warning("readiness check failed", exc_info=True, extra={"resource": resource.name})
        return False


def _state(resource: Resource, ok: bool) -> str:
    """The check's state; "degraded" is serving on a fallback (Redis down: memory instead)."""
    if not ok:
        return "failing"
    return "degraded" if getattr(resource, "degraded", False) else "ok"


@dataclass(frozen=True, slots=True)
class Answer:
    """One readiness check of every resource, and when it began."""

    began: float
    draining: bool
    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(state != "failing" for state in self.checks.values())


class Readiness:
    """`/ready`'s answer, checked at most once per `max_age_s` by this process.

    Contract:
    - Clock: `time.monotonic()` unless given. An answer's age counts from when its check began,
      so no probe is answered from a check that began more than `max_age_s` ago; 0 checks on
      every probe.
    - Probes arriving while a check runs wait for that check: one check, however many probes.
    - The check runs in a task of its own: a probe that gives up does not cancel it for others.
    - A shutdown starting (`Drain`) is never hidden: the drain state is part of the answer, and
      an answer cached before it changed is not reused.
    """

    def __init__(
        self, max_age_s: float, drain: Drain, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_age_s < 0:
            raise ValueError(f"max_age_s must not be negative, got {max_age_s}")
        self.max_age_s = max_age_s
        self._drain = drain
        self._clock = clock
        self._answer: Answer | None = None
        self._pending: asyncio.Task[Answer] | None = None

    async def answer(self, resources: Sequence[Resource]) -> Answer:
        answer = self._answer
        if (
            answer is not None
            and self._clock() - answer.began < self.max_age_s
            and answer.draining == self._drain.draining
        ):
            return answer
        if self._pending is None:
            self._pending = asyncio.create_task(self._check(resources))
        return await asyncio.shield(self._pending)

    async def _check(self, resources: Sequence[Resource]) -> Answer:
        try:
            began, draining = self._clock(), self._drain.draining
            results = await asyncio.gather(*(_check(resource) for resource in resources))
            self._answer = Answer(
                began,
                draining,
                {
                    resource.name: _state(resource, ok)
                    for resource, ok in zip(resources, results, strict=True)
                },
            )
            return self._answer
        finally:
            self._pending = None


@router.get("/ready", response_model=None)
async def ready(request: Request) -> JSONResponse:
    """Readiness: every resource answers its check (run concurrently, reused briefly)."""
    state = request.app.state
    answer = await state.readiness.answer(state.resources)
    return JSONResponse(
        {"status": "ready" if answer.ready else "not ready", "checks": answer.checks},
        status_code=200 if answer.ready else 503,
    )


def _allowed(request: Request, settings: Settings) -> bool:
    if settings.health_detailed_open:
        return True
    token = settings.health_detailed_token
    if token is None:
        return False
    offered = request.headers.get("authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    return secrets.compare_digest(offered.encode(), expected.encode())


def _process_stats() -> dict[str, object]:
    """Read from /proc by psutil; called in a worker thread."""
    with _PROCESS.oneshot():
        memory = _PROCESS.memory_info()
        cpu = _PROCESS.cpu_times()
        return {
            "pid": _PROCESS.pid,
            "rss_bytes": memory.rss,
            "cpu_percent": _PROCESS.cpu_percent(interval=None),
            "cpu_seconds": cpu.user + cpu.system,
            "open_fds": _PROCESS.num_fds(),
            "threads": _PROCESS.num_threads(),
        }


@router.get("/health/detailed", response_model=None, include_in_schema=False)
async def detailed(request: Request) -> JSONResponse:
    """Resources, in-process machinery, loop and process state, uptime and version."""
    state = request.app.state
    if not _allowed(request, state.settings):
        # 404, not 401: outsiders learn nothing about what is behind the path.
        raise HTTPException(status_code=404)
    asked_at = time.perf_counter()
    await asyncio.sleep(0)
    loop_turn_ms = (time.perf_counter() - asked_at) * 1000.0
    resources: Sequence[Resource] = [*state.resources, *state.internals]
    return JSONResponse(
        {
            "status": "ok",
            "service": state.settings.service_name,
            "version": __version__,
            "python": platform.python_version(),
            "environment": state.settings.environment,
            "uptime_s": round(time.time() - state.started_at, 3),
            "loop": {"turn_ms": round(loop_turn_ms, 3)},
            "process": await asyncio.to_thread(_process_stats),
            "resources": {resource.name: resource.details() for resource in resources},
        }
    )
