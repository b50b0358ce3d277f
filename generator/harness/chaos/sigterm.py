"""`sigterm`: the service told to stop under load, with the harness as its load balancer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from dataclasses import dataclass

import httpx

from generator.harness.chaos import infra
from generator.harness.chaos.probe import BackgroundWrk, Probe, probing
from generator.harness.chaos.scenario import (
    WARM_S,
    Context,
    Fault,
    clock,
    load_path,
    shared_settings,
    wrk_figures,
)
from generator.harness.machine import WRK_CPU
from generator.harness.suite import Result


@dataclass(frozen=True, slots=True)
class Sigterm(Fault):
    async def run(self, ctx: Context) -> Result:
        """SIGTERM under load; the harness acts as the load balancer and stops sending new requests
        once /ready says 503. Every request sent before that must succeed."""
        path = load_path(ctx)
        result = Result(
            "sigterm", settings=shared_settings(ctx, SHUTDOWN_DELAY_S=f"{ctx.drain_s:g}")
        )
        zero, now = clock()
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
                            status: int | None = (
                                await client.get(server.url("/ready"))
                            ).status_code
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
            **wrk_figures(wrk_result),
        }
        return result


SIGTERM = Sigterm(
    "sigterm",
    "SIGTERM under load: /ready 503 during the drain, no failed in-flight request",
)
