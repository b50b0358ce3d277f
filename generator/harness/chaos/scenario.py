"""What a fault scenario of `bulwark chaos` is, and what it reports.

A `Fault` owns its usage check (`unavailable`), its run (`run`: start the service afresh,
load it with wrk on the other core, probe it with its own lanes (probe.py), inject the fault on
the scenario's clock) and its targets: the `Check`s of its `Result` (a figure, its target,
passed or not: `generator/harness/suite.py`), plus figures for information. The runner only
iterates.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from generator.harness import servers, wrk
from generator.harness.chaos.infra import REDIS_INSTALL_HINT
from generator.harness.chaos.probe import Sample
from generator.harness.project import Project
from generator.harness.suite import Result

# Load before the fault, so the figures start from a warm, steady service.
WARM_S = 2.0
# The target on answers while a dependency is down (503s, /health), unless raised.
DOWN_503_MS = 50.0
# Good answers in a row that count as recovered / as a replaced worker serving.
STEADY_S = 1.0


@dataclass(frozen=True, slots=True)
class Context:
    project: Project
    # DATABASE_URL of the migrated embedded database, when the project has postgres.
    db_env: dict[str, str]
    # The seeded item's route, or None without postgres.
    item_path: str | None
    connections: int
    outage_s: float
    drain_s: float
    # The bound on answers while Postgres is down (503s, /health); raise it only as a
    # tripwire on a machine too busy to hold it.
    latency_target_ms: float = DOWN_503_MS
    # The CPUs the harness could use before it pinned itself (a restarted database gets them).
    cpus: tuple[int, ...] = ()
    # Where each scenario's server output is kept (`<dir>/<scenario>.log`), if anywhere.
    log_dir: Path | None = None

    def log(self, scenario: str) -> Path | None:
        return None if self.log_dir is None else self.log_dir / f"{scenario}.log"


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault under load; subclasses implement `run`."""

    name: str
    description: str
    features: tuple[str, ...] = ()
    needs_redis: bool = False
    # Stops and starts the project's embedded PostgreSQL, so no external DATABASE_URL.
    embedded_postgres: bool = False

    @property
    def tools(self) -> list[tuple[str, str]]:
        """Programs it needs beyond wrk and taskset, with their install hints."""
        return [("redis-server", REDIS_INSTALL_HINT)] if self.needs_redis else []

    def unavailable(self, project: Project) -> str | None:
        """Why `project` (here, with this environment) cannot run it, or None."""
        missing = [f for f in self.features if f not in project.features]
        if missing:
            return (
                f"scenario {self.name} needs the {', '.join(missing)} feature(s); "
                f"{project.root} was generated without them"
            )
        if self.embedded_postgres and "DATABASE_URL" in os.environ:
            return (
                f"scenario {self.name} stops the project's embedded PostgreSQL; "
                "unset DATABASE_URL to use it"
            )
        return None

    async def run(self, ctx: Context) -> Result:
        """Break the thing under load; the figures and their checks."""
        raise NotImplementedError


def shared_settings(ctx: Context, **extra: str) -> dict[str, str]:
    """Service settings (no prefix) every scenario shares, plus the scenario's own."""
    settings = {"HEALTH_DETAILED_PUBLIC": "true"}
    if "rate_limit" in ctx.project.features:
        # One wrk client is one address: the default per-address limit would answer 429s.
        settings["RATE_LIMIT_DEFAULT"] = ""
    return {**settings, **extra}


def load_path(ctx: Context) -> str:
    return ctx.item_path or "/health"


async def detailed(server: servers.RunningServer) -> dict[str, Any]:
    """The service's /health/detailed resources (HEALTH_DETAILED_PUBLIC is on in chaos runs)."""
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        response = await client.get(server.url("/health/detailed"))
    response.raise_for_status()
    resources: dict[str, Any] = response.json()["resources"]
    return resources


def clock() -> tuple[float, Callable[[], float]]:
    """The scenario's clock zero (monotonic) and a reader of seconds since it."""
    zero = time.monotonic()
    return zero, lambda: time.monotonic() - zero


async def poll(ready: Callable[[], bool], timeout_s: float) -> bool:
    """Poll an outside condition (a process, a server) every 0.1 s until true or timed out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ready():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


def latencies(samples: Sequence[Sample]) -> list[float]:
    return [s.latency_ms for s in samples]


def wrk_figures(result: wrk.WrkResult) -> dict[str, Any]:
    return {
        "wrk_requests": result.requests,
        "wrk_rps": round(result.rps, 1),
        "wrk_p99_ms": round(result.p99_ms, 3),
        "wrk_non_2xx": result.non_2xx_3xx,
        "wrk_socket_errors": result.errors - result.non_2xx_3xx,
    }
