"""`redis-down`: the service's redis-server killed under load, then started again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from generator.harness.chaos import infra
from generator.harness.chaos.probe import BackgroundWrk, Probe, percentile, probing
from generator.harness.chaos.scenario import (
    WARM_S,
    Context,
    Fault,
    clock,
    detailed,
    latencies,
    poll,
    shared_settings,
    wrk_figures,
)
from generator.harness.machine import WRK_CPU
from generator.harness.suite import Result

# A rate limit far above what one wrk client sends: every request goes through Redis.
UNREACHED_LIMIT = "100000000/minute"
# A restarted Redis must be in use again within this (the limiter retries it after 2 s).
REDIS_BACK_S = 10.0


@dataclass(frozen=True, slots=True)
class RedisDown(Fault):
    async def run(self, ctx: Context) -> Result:
        """Kill redis-server under load: limits count in memory, the cache serves L1, no 5xx;
        then start it again and see the limits go back to it."""
        assert ctx.item_path is not None
        result = Result(
            "redis-down", settings=shared_settings(ctx, RATE_LIMIT_DEFAULT=UNREACHED_LIMIT)
        )
        zero, now = clock()
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
                    before = await detailed(server)
                    kill_at = now()
                    redis.kill()
                    result.events.append((kill_at, "redis-server killed"))
                    await asyncio.sleep(ctx.outage_s)
                    after = await detailed(server)
                    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
                        ready = (await client.get(server.url("/ready"))).status_code
                    restart_at = now()
                    await asyncio.to_thread(redis.start)  # empty, on the same port
                    result.events.append((now(), "redis-server restarted"))
                    # Back in use once the limiter writes its counters there again.
                    back = await poll(lambda: redis.key_count() > 0, REDIS_BACK_S)
                    back_s = now() - restart_at if back else float("inf")
                    wrk_result = await load.stop()
                server.check_alive()
        result.samples = probe.samples

        during = [s for s in probe.samples if kill_at <= s.sent_s < restart_at]
        items_during = probe.select("items", kill_at, restart_at)
        limiter_before, limiter_after = before["rate_limit"], after["rate_limit"]
        cache_before, cache_after = before["cache"], after["cache"]
        result.at_least(
            "redis_keys_before", "keys in Redis before the kill (limits, cache)", keys, 1
        )
        result.equal(
            "server_errors",
            "5xx answers (probes and wrk)",
            sum(s.status is not None and s.status >= 500 for s in probe.samples)
            + wrk_result.non_2xx_3xx,
            0,
        )
        result.equal(
            "probe_failures",
            "probe requests not answered 2xx",
            sum(not s.ok for s in probe.samples),
            0,
        )
        result.equal("wrk_errors", "wrk errors (socket errors and non-2xx)", wrk_result.errors, 0)
        result.at_least(
            "rate_limit_fallback",
            "rate-limit checks counted in process memory",
            int(limiter_after["fallback_total"]) - int(limiter_before["fallback_total"]),
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
            "items_p99_ms_during": round(percentile(latencies(items_during), 99), 3),
            "probe_requests_during": len(during),
            "ready_status_during": ready,
            "cache_before": cache_before,
            "cache_after": cache_after,
            "rate_limit_before": limiter_before,
            "rate_limit_after": limiter_after,
            **wrk_figures(wrk_result),
        }
        return result


REDIS_DOWN = RedisDown(
    "redis-down",
    "redis-server killed under load: limits count in memory, cache serves L1, no 5xx",
    ("postgres", "cache", "rate_limit"),
    needs_redis=True,
)
