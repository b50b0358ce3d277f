"""The faults of `bulwark chaos` (issue 8, part 3): each breaks one thing under wrk load and
checks the figures the issue sets.

Every scenario starts the service afresh, runs wrk against it on the other core, probes it
with its own lanes (chaos_probe.py), injects the fault on the scenario's clock and reports
`Check`s (a figure, its target, passed or not) plus figures for information.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from generator.harness import chaos_infra as infra
from generator.harness import service as svc
from generator.harness import wrk
from generator.harness.chaos_probe import (
    BackgroundWrk,
    Probe,
    Sample,
    percentile,
    probing,
    recovered_at,
    timeline,
)

WRK_CPU = 1
# Load before the fault, so the figures start from a warm, steady service.
WARM_S = 2.0
# postgres-down: the request deadline the service runs with, shorter than the outage so that
# a request waiting on the dead database would show as one that outlived it.
DEADLINE_S = 5.0
# Issue 8's targets.
DOWN_503_MS = 50.0
RECOVERY_S = 5.0
# Watch this long after a restart for the recovery (a miss is reported, not waited out).
RECOVERY_WATCH_S = 15.0
# Good answers in a row that count as recovered / as a replaced worker serving.
STEADY_S = 1.0
WORKER_REPLACED_S = 10.0
# A rate limit far above what one wrk client sends: every request goes through Redis.
UNREACHED_LIMIT = "100000000/minute"
# A restarted Redis must be in use again within this (the limiter retries it after 2 s).
REDIS_BACK_S = 10.0


@dataclass(frozen=True, slots=True)
class Check:
    """One figure against its target."""

    key: str
    label: str
    value: float
    unit: str
    target: str
    passed: bool


@dataclass(frozen=True, slots=True)
class Context:
    project: svc.Project
    # DATABASE_URL of the migrated embedded database, when the project has postgres.
    db_env: dict[str, str]
    # The seeded item's route, or None without postgres.
    item_path: str | None
    connections: int
    outage_s: float
    drain_s: float
    # Issue 8's bound on answers while Postgres is down (503s, /health); lower it only as a
    # tripwire on a machine too busy to hold it.
    latency_target_ms: float = DOWN_503_MS
    # The CPUs the harness could use before it pinned itself (a restarted database gets them).
    cpus: tuple[int, ...] = ()
    # Where each scenario's server output is kept (`<dir>/<scenario>.log`), if anywhere.
    log_dir: Path | None = None

    def log(self, scenario: str) -> Path | None:
        return None if self.log_dir is None else self.log_dir / f"{scenario}.log"


@dataclass
class Result:
    name: str
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def below(self, key: str, label: str, value: float, limit: float, unit: str) -> None:
        self.checks.append(Check(key, label, value, unit, f"< {limit:g}", value < limit))

    def at_most(self, key: str, label: str, value: float, limit: float, unit: str = "") -> None:
        self.checks.append(Check(key, label, value, unit, f"<= {limit:g}", value <= limit))

    def at_least(self, key: str, label: str, value: float, limit: float, unit: str = "") -> None:
        self.checks.append(Check(key, label, value, unit, f">= {limit:g}", value >= limit))

    def equal(self, key: str, label: str, value: float, wanted: float, unit: str = "") -> None:
        self.checks.append(Check(key, label, value, unit, f"= {wanted:g}", value == wanted))

    def report(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "checks": [
                {
                    "key": c.key,
                    "figure": c.label,
                    "value": c.value,
                    "unit": c.unit,
                    "target": c.target,
                    "passed": c.passed,
                }
                for c in self.checks
            ],
            **{c.key: c.value for c in self.checks},
            "figures": self.figures,
            "settings": self.settings,
            "events": [{"t_s": round(t, 3), "event": name} for t, name in self.events],
            "timeline": timeline(self.samples),
        }


@dataclass(frozen=True, slots=True)
class ChaosScenario:
    name: str
    description: str
    features: tuple[str, ...]
    run: Callable[[Context], Coroutine[Any, Any, Result]]
    needs_redis: bool = False
    # Stops and starts the project's embedded PostgreSQL, so no external DATABASE_URL.
    embedded_postgres: bool = False


def _settings(ctx: Context, **extra: str) -> dict[str, str]:
    """Service settings (no prefix) every scenario shares, plus the scenario's own."""
    settings = {"HEALTH_DETAILED_PUBLIC": "true"}
    if "rate_limit" in ctx.project.features:
        # One wrk client is one address: the default per-address limit would answer 429s.
        settings["RATE_LIMIT_DEFAULT"] = ""
    return {**settings, **extra}


def _load_path(ctx: Context) -> str:
    return ctx.item_path or "/health"


async def _detailed(server: svc.RunningServer) -> dict[str, Any]:
    """The service's /health/detailed resources (HEALTH_DETAILED_PUBLIC is on in chaos runs)."""
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        response = await client.get(server.url("/health/detailed"))
    response.raise_for_status()
    resources: dict[str, Any] = response.json()["resources"]
    return resources


def _clock() -> tuple[float, Callable[[], float]]:
    """The scenario's clock zero (monotonic) and a reader of seconds since it."""
    zero = time.monotonic()
    return zero, lambda: time.monotonic() - zero


async def _poll(ready: Callable[[], bool], timeout_s: float) -> bool:
    """Poll an outside condition (a process, a server) every 0.1 s until true or timed out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ready():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


def _latencies(samples: list[Sample]) -> list[float]:
    return [s.latency_ms for s in samples]


def _wrk_figures(result: wrk.WrkResult) -> dict[str, Any]:
    return {
        "wrk_requests": result.requests,
        "wrk_rps": round(result.rps, 1),
        "wrk_p99_ms": round(result.p99_ms, 3),
        "wrk_non_2xx": result.non_2xx_3xx,
        "wrk_socket_errors": result.errors - result.non_2xx_3xx,
    }


# --- postgres-down -------------------------------------------------------------------------------


async def postgres_down(ctx: Context) -> Result:
    """Stop PostgreSQL under load for `outage_s`, start it again; the service stays up."""
    assert ctx.item_path is not None
    settings = {"REQUEST_TIMEOUT_S": f"{DEADLINE_S:g}"}
    # The statement timeout must stay below the request deadline (settings.py checks it).
    settings["STATEMENT_TIMEOUT_MS"] = str(int(DEADLINE_S * 1000) - 1000)
    if "cache" in ctx.project.features:
        settings["CACHE_ITEMS_TTL_S"] = "0"  # every item read goes to the database
    result = Result("postgres-down", settings=_settings(ctx, **settings))
    zero, now = _clock()
    with infra.serve_module(
        ctx.project, result.settings, ctx.db_env, keep_log=ctx.log(result.name)
    ) as server:
        probe = Probe(
            server.url(""),
            [("db", ctx.item_path), ("db", ctx.item_path), ("health", "/health")],
            zero=zero,
            timeout_s=DEADLINE_S * 2,
        )
        load = BackgroundWrk(server.url(ctx.item_path), connections=ctx.connections, cpu=WRK_CPU)
        async with load, probing(probe):
            await asyncio.sleep(WARM_S)
            result.events.append((now(), "postgres stopping"))
            await asyncio.to_thread(infra.postgres_stop, ctx.project)
            down_at = now()
            result.events.append((down_at, "postgres down"))
            await asyncio.sleep(ctx.outage_s / 2)
            breaker_mid = (await _detailed(server)).get("postgres_breaker", {})
            await asyncio.sleep(max(ctx.outage_s - (now() - down_at), 0.0))
            restart_at = now()
            result.events.append((restart_at, "postgres starting"))
            await asyncio.to_thread(infra.postgres_start, ctx.project, ctx.cpus)
            up_at = now()
            result.events.append((up_at, "postgres up"))
            while now() < up_at + RECOVERY_WATCH_S:
                back = recovered_at(probe.select("db"), up_at)
                if back is not None and now() - back >= STEADY_S:
                    break
                await asyncio.sleep(0.1)
            wrk_result = await load.stop()
        server.check_alive()
        breaker_end = (await _detailed(server)).get("postgres_breaker", {})
    result.samples = probe.samples

    db_before = probe.select("db", end_s=result.events[0][0])
    db_down = probe.select("db", down_at, restart_at)
    health_before = probe.select("health", end_s=result.events[0][0])
    health_down = probe.select("health", down_at, restart_at)
    refused = [s for s in db_down if s.status == 503]
    by_breaker = [s for s in refused if "dependency is unavailable" in s.body]
    back = recovered_at(probe.select("db"), up_at)
    recovery_s = max(back - up_at, 0.0) if back is not None else float("inf")

    result.at_least("db_down_requests", "DB-route probes while down", len(db_down), 1)
    result.equal(
        "db_down_non_503",
        "DB-route answers other than 503 while down",
        len(db_down) - len(refused),
        0,
    )
    result.below(
        "db_down_p99_ms",
        "DB-route latency p99 while down",
        round(percentile(_latencies(db_down), 99), 3),
        ctx.latency_target_ms,
        "ms",
    )
    result.equal(
        "unexpected_5xx",
        "5xx answers other than 503 (any phase)",
        sum(s.status is not None and s.status >= 500 and s.status != 503 for s in probe.samples),
        0,
    )
    result.at_least(
        "breaker_opened",
        "times the Postgres breaker opened",
        int(breaker_end.get("opened_total", 0)),
        1,
    )
    result.below(
        "max_latency_ms",
        "slowest probe request (any phase)",
        round(max(_latencies(probe.samples), default=0.0), 3),
        DEADLINE_S * 1000,
        "ms",
    )
    result.equal(
        "health_down_failures",
        "/health answers other than 200 while down",
        sum(not s.ok for s in health_down),
        0,
    )
    result.below(
        "health_down_p99_ms",
        "/health latency p99 while down",
        round(percentile(_latencies(health_down), 99), 3),
        ctx.latency_target_ms,
        "ms",
    )
    result.below(
        "recovery_s", "DB route all 200 again after restart", round(recovery_s, 3), RECOVERY_S, "s"
    )
    result.figures = {
        "outage_s": round(restart_at - down_at, 3),
        "restart_s": round(up_at - restart_at, 3),
        "deadline_s": DEADLINE_S,
        "db_down_max_ms": round(max(_latencies(db_down), default=0.0), 3),
        "db_down_server_p99_ms": round(
            percentile((s.server_ms for s in db_down if s.server_ms is not None), 99), 3
        ),
        "db_down_503_by_breaker": len(by_breaker),
        "db_before_p99_ms": round(percentile(_latencies(db_before), 99), 3),
        "health_before_p99_ms": round(percentile(_latencies(health_before), 99), 3),
        "breaker_mid_outage": breaker_mid,
        "breaker_end": breaker_end,
        **_wrk_figures(wrk_result),
    }
    return result


# --- redis-down ----------------------------------------------------------------------------------


async def redis_down(ctx: Context) -> Result:
    """Kill redis-server under load: limits fail open, the cache serves L1, no 5xx; then start
    it again and see the limits go back to it."""
    assert ctx.item_path is not None
    result = Result("redis-down", settings=_settings(ctx, RATE_LIMIT_DEFAULT=UNREACHED_LIMIT))
    zero, now = _clock()
    with infra.RedisServer(ctx.cpus) as redis:
        env = {**ctx.db_env, "REDIS_URL": redis.url}
        with infra.serve_module(
            ctx.project, result.settings, env, keep_log=ctx.log(result.name)
        ) as server:
            probe = Probe(
                server.url(""),
                [("items", ctx.item_path), ("items", ctx.item_path), ("health", "/health")],
                zero=zero,
                timeout_s=10.0,
            )
            load = BackgroundWrk(
                server.url(ctx.item_path), connections=ctx.connections, cpu=WRK_CPU
            )
            async with load, probing(probe):
                await asyncio.sleep(WARM_S)
                keys = redis.key_count()
                before = await _detailed(server)
                kill_at = now()
                redis.kill()
                result.events.append((kill_at, "redis-server killed"))
                await asyncio.sleep(ctx.outage_s)
                after = await _detailed(server)
                async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
                    ready = (await client.get(server.url("/ready"))).status_code
                restart_at = now()
                await asyncio.to_thread(redis.start)  # empty, on the same port
                result.events.append((now(), "redis-server restarted"))
                # Back in use once the limiter writes its counters there again.
                back = await _poll(lambda: redis.key_count() > 0, REDIS_BACK_S)
                back_s = now() - restart_at if back else float("inf")
                wrk_result = await load.stop()
            server.check_alive()
    result.samples = probe.samples

    during = [s for s in probe.samples if kill_at <= s.sent_s < restart_at]
    items_during = probe.select("items", kill_at, restart_at)
    limiter_before, limiter_after = before["rate_limit"], after["rate_limit"]
    cache_before, cache_after = before["cache"], after["cache"]
    result.at_least("redis_keys_before", "keys in Redis before the kill (limits, cache)", keys, 1)
    result.equal(
        "server_errors",
        "5xx answers (probes and wrk)",
        sum(s.status is not None and s.status >= 500 for s in probe.samples)
        + wrk_result.non_2xx_3xx,
        0,
    )
    result.equal(
        "probe_failures", "probe requests not answered 2xx", sum(not s.ok for s in probe.samples), 0
    )
    result.equal("wrk_errors", "wrk errors (socket errors and non-2xx)", wrk_result.errors, 0)
    result.at_least(
        "rate_limit_fail_open",
        "rate-limit checks that failed open",
        int(limiter_after["fail_open_total"]) - int(limiter_before["fail_open_total"]),
        1,
    )
    result.below(
        "redis_back_s",
        "restarted Redis holds the limits again",
        round(back_s, 3),
        REDIS_BACK_S,
        "s",
    )
    result.at_least(
        "l1_hits_during_outage",
        "item reads served from L1 while Redis is down",
        int(cache_after["hits_l1"]) - int(cache_before["hits_l1"]),
        len(items_during),
    )
    result.figures = {
        "outage_s": round(ctx.outage_s, 3),
        "items_p99_ms_during": round(percentile(_latencies(items_during), 99), 3),
        "probe_requests_during": len(during),
        "ready_status_during": ready,
        "cache_before": cache_before,
        "cache_after": cache_after,
        "rate_limit_before": limiter_before,
        "rate_limit_after": limiter_after,
        **_wrk_figures(wrk_result),
    }
    return result


# --- sigterm -------------------------------------------------------------------------------------


async def sigterm(ctx: Context) -> Result:
    """SIGTERM under load; the harness acts as the load balancer and stops sending new requests
    once /ready says 503. Every request sent before that must succeed."""
    path = _load_path(ctx)
    result = Result("sigterm", settings=_settings(ctx, SHUTDOWN_DELAY_S=f"{ctx.drain_s:g}"))
    zero, now = _clock()
    ready_statuses: list[tuple[float, int | None]] = []
    with infra.serve_module(
        ctx.project, result.settings, ctx.db_env, keep_log=ctx.log(result.name)
    ) as server:
        probe = Probe(
            server.url(""),
            [("load", path), ("load", path), ("load", path)],
            zero=zero,
            timeout_s=30.0,
        )
        load = BackgroundWrk(server.url(path), connections=ctx.connections, cpu=WRK_CPU)
        first_503: float | None = None
        async with load, probing(probe):
            await asyncio.sleep(WARM_S)
            signalled_at = now()
            os.kill(server.process.pid, signal.SIGTERM)
            result.events.append((signalled_at, "SIGTERM"))
            async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
                while first_503 is None and now() < signalled_at + ctx.drain_s + 5.0:
                    try:
                        status: int | None = (await client.get(server.url("/ready"))).status_code
                    except httpx.HTTPError:
                        status = None
                    ready_statuses.append((now(), status))
                    if status == 503:
                        first_503 = now()
                    else:
                        await asyncio.sleep(0.02)
            deregistered_at = now()
            result.events.append((deregistered_at, "load balancer stops sending (/ready 503)"))
            probe.stop_issuing()
            wrk_result = await load.stop()
        bound = ctx.drain_s + 45.0
        try:
            code = await asyncio.to_thread(server.process.wait, bound)
        except subprocess.TimeoutExpired:  # reported as a failed check below
            code = -1
        exited_at = now()
        result.events.append((exited_at, f"service exited with {code}"))
    result.samples = probe.samples

    result.equal(
        "ready_503_seen", "/ready answered 503 during the drain", int(first_503 is not None), 1
    )
    if first_503 is not None:
        result.below(
            "ready_503_after_ms",
            "SIGTERM to first /ready 503",
            round((first_503 - signalled_at) * 1000, 3),
            ctx.drain_s * 1000,
            "ms",
        )
    result.equal(
        "failed_requests",
        "probe requests sent that did not get a 2xx",
        sum(not s.ok for s in probe.samples),
        0,
    )
    result.equal("wrk_errors", "wrk errors (socket errors and non-2xx)", wrk_result.errors, 0)
    result.at_least(
        "served_after_sigterm",
        "probe requests sent after SIGTERM and served",
        sum(s.ok for s in probe.samples if s.sent_s >= signalled_at),
        1,
    )
    result.equal("exit_code", "service exit status", code, 0)
    result.figures = {
        "path": path,
        "drain_delay_s": ctx.drain_s,
        "shutdown_s": round(exited_at - signalled_at, 3),
        "in_flight_at_sigterm": sum(
            s.sent_s < signalled_at < s.sent_s + s.latency_ms / 1000 for s in probe.samples
        ),
        "ready_polls": len(ready_statuses),
        **_wrk_figures(wrk_result),
    }
    return result


# --- worker-kill ---------------------------------------------------------------------------------


async def worker_kill(ctx: Context) -> Result:
    """SIGKILL one of two uvicorn workers under load: the supervisor replaces it, and only the
    requests on the killed worker's connections fail."""
    path = _load_path(ctx)
    result = Result("worker-kill", settings=_settings(ctx))
    zero, now = _clock()
    with infra.serve_module(
        ctx.project, result.settings, ctx.db_env, workers=2, keep_log=ctx.log(result.name)
    ) as server:
        supervisor = server.process.pid
        deadline = time.monotonic() + svc.READY_TIMEOUT_S
        while len(infra.worker_pids(supervisor)) < 2:
            if time.monotonic() > deadline:
                raise svc.ServiceError(f"no 2 workers under pid {supervisor}")
            await asyncio.sleep(0.1)
        probe = Probe(
            server.url(""),
            [("load", path), ("load", path), ("load", path), ("load", path)],
            zero=zero,
            timeout_s=10.0,
        )
        load = BackgroundWrk(server.url(path), connections=ctx.connections, cpu=WRK_CPU)
        replaced_at: float | None = None
        async with load, probing(probe):
            await asyncio.sleep(WARM_S)
            before = infra.worker_pids(supervisor)
            victim = before[0]
            in_flight_bound = infra.established_connections(victim, server.port)
            killed_at = now()
            os.kill(victim, signal.SIGKILL)
            result.events.append((killed_at, f"worker {victim} killed"))
            workers = before
            while now() < killed_at + WORKER_REPLACED_S:
                workers = infra.worker_pids(supervisor)
                if len(workers) == 2 and victim not in workers:
                    replaced_at = now()
                    result.events.append(
                        (
                            replaced_at,
                            f"new worker {', '.join(map(str, set(workers) - set(before)))}",
                        )
                    )
                    break
                await asyncio.sleep(0.05)
            # Let the new worker start and the load settle on both.
            await asyncio.sleep(STEADY_S * 2)
            wrk_result = await load.stop()
        server.check_alive()
    result.samples = probe.samples

    failures = sum(not s.ok for s in probe.samples)
    settled = killed_at + STEADY_S
    result.below(
        "replaced_s",
        "killed worker replaced by a new process",
        round((replaced_at - killed_at) if replaced_at is not None else float("inf"), 3),
        WORKER_REPLACED_S,
        "s",
    )
    result.equal("workers_after", "worker processes after", len(workers), 2)
    result.at_most(
        "errors", "failed requests (wrk and probes)", wrk_result.errors + failures, in_flight_bound
    )
    result.equal(
        "failures_after_kill",
        f"probe failures sent {STEADY_S:g} s after the kill on",
        sum(not s.ok for s in probe.samples if s.sent_s >= settled),
        0,
    )
    result.figures = {
        "path": path,
        "killed_worker_connections": in_flight_bound,
        "probe_failures": failures,
        **_wrk_figures(wrk_result),
    }
    return result


SCENARIOS: dict[str, ChaosScenario] = {
    s.name: s
    for s in (
        ChaosScenario(
            "postgres-down",
            "Postgres stopped under load, then restarted: fast 503s while down, /health "
            "unaffected, recovery without a service restart",
            ("postgres", "circuit_breaker", "timeout"),
            postgres_down,
            embedded_postgres=True,
        ),
        ChaosScenario(
            "redis-down",
            "redis-server killed under load: limits fail open, cache serves L1, no 5xx",
            ("postgres", "cache", "rate_limit"),
            redis_down,
            needs_redis=True,
        ),
        ChaosScenario(
            "sigterm",
            "SIGTERM under load: /ready 503 during the drain, no failed in-flight request",
            (),
            sigterm,
        ),
        ChaosScenario(
            "worker-kill",
            "one of 2 workers SIGKILLed under load: replaced, errors only on its connections",
            (),
            worker_kill,
        ),
    )
}
