"""`postgres-down`: PostgreSQL stopped under load for the outage, then started again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from generator.harness.chaos import infra
from generator.harness.chaos.probe import BackgroundWrk, Probe, percentile, probing, recovered_at
from generator.harness.chaos.scenario import (
    STEADY_S,
    WARM_S,
    Context,
    Fault,
    clock,
    detailed,
    latencies,
    shared_settings,
    wrk_figures,
)
from generator.harness.machine import WRK_CPU
from generator.harness.suite import Result

# The request deadline the service runs with, shorter than the outage so that a request
# waiting on the dead database would show as one that outlived it.
DEADLINE_S = 5.0
# The target on the DB route's recovery once PostgreSQL is back.
RECOVERY_S = 5.0
# Watch this long after a restart for the recovery (a miss is reported, not waited out).
RECOVERY_WATCH_S = 15.0


@dataclass(frozen=True, slots=True)
class PostgresDown(Fault):
    async def run(self, ctx: Context) -> Result:
        """Stop PostgreSQL under load for `outage_s`, start it again; the service stays up."""
        assert ctx.item_path is not None
        settings = {"REQUEST_TIMEOUT_S": f"{DEADLINE_S:g}"}
        # The statement timeout must stay below the request deadline (settings.py checks it).
        settings["STATEMENT_TIMEOUT_MS"] = str(int(DEADLINE_S * 1000) - 1000)
        if "cache" in ctx.project.features:
            settings["CACHE_ITEMS_TTL_S"] = "0"  # every item read goes to the database
        result = Result(self.name, settings=shared_settings(ctx, **settings))
        zero, now = clock()
        with infra.serve_module(
            ctx.project, result.settings, ctx.db_env, keep_log=ctx.log(result.name)
        ) as server:
            probe = Probe(
                server.url(""),
                [("db", ctx.item_path), ("db", ctx.item_path), ("health", "/health")],
                zero=zero,
                timeout_s=DEADLINE_S * 2,
            )
            load = BackgroundWrk(
                server.url(ctx.item_path), connections=ctx.connections, cpu=WRK_CPU
            )
            async with load, probing(probe):
                await asyncio.sleep(WARM_S)
                result.events.append((now(), "postgres stopping"))
                await asyncio.to_thread(infra.postgres_stop, ctx.project)
                down_at = now()
                result.events.append((down_at, "postgres down"))
                await asyncio.sleep(ctx.outage_s / 2)
                breaker_mid = (await detailed(server)).get("postgres_breaker", {})
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
            breaker_end = (await detailed(server)).get("postgres_breaker", {})
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
            round(percentile(latencies(db_down), 99), 3),
            ctx.latency_target_ms,
            "ms",
        )
        result.equal(
            "unexpected_5xx",
            "5xx answers other than 503 (any phase)",
            sum(
                s.status is not None and s.status >= 500 and s.status != 503 for s in probe.samples
            ),
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
            round(max(latencies(probe.samples), default=0.0), 3),
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
            round(percentile(latencies(health_down), 99), 3),
            ctx.latency_target_ms,
            "ms",
        )
        result.below(
            "recovery_s",
            "DB route all 200 again after restart",
            round(recovery_s, 3),
            RECOVERY_S,
            "s",
        )
        result.figures = {
            "outage_s": round(restart_at - down_at, 3),
            "restart_s": round(up_at - restart_at, 3),
            "deadline_s": DEADLINE_S,
            "db_down_max_ms": round(max(latencies(db_down), default=0.0), 3),
            "db_down_server_p99_ms": round(
                percentile((s.server_ms for s in db_down if s.server_ms is not None), 99), 3
            ),
            "db_down_503_by_breaker": len(by_breaker),
            "db_before_p99_ms": round(percentile(latencies(db_before), 99), 3),
            "health_before_p99_ms": round(percentile(latencies(health_before), 99), 3),
            "breaker_mid_outage": breaker_mid,
            "breaker_end": breaker_end,
            **wrk_figures(wrk_result),
        }
        return result


POSTGRES_DOWN = PostgresDown(
    "postgres-down",
    "Postgres stopped under load, then restarted: fast 503s while down, /health "
    "unaffected, recovery without a service restart",
    ("postgres", "circuit_breaker", "timeout"),
    embedded_postgres=True,
)
