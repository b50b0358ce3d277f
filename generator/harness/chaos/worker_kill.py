"""`worker-kill`: one of two uvicorn workers SIGKILLed under load."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass

from generator.harness import procfs, servers
from generator.harness.chaos import infra
from generator.harness.chaos.probe import BackgroundWrk, Probe, probing
from generator.harness.chaos.scenario import (
    STEADY_S,
    WARM_S,
    Context,
    Fault,
    clock,
    load_path,
    shared_settings,
    wrk_figures,
)
from generator.harness.machine import WRK_CPU
from generator.harness.project import ServiceError
from generator.harness.suite import Result

# The target on the killed worker's replacement.
WORKER_REPLACED_S = 10.0


@dataclass(frozen=True, slots=True)
class WorkerKill(Fault):
    async def run(self, ctx: Context) -> Result:
        """SIGKILL one of two uvicorn workers under load: the supervisor replaces it, and only the
        requests on the killed worker's connections fail."""
        path = load_path(ctx)
        result = Result(self.name, settings=shared_settings(ctx))
        zero, now = clock()
        with infra.serve_module(
            ctx.project, result.settings, ctx.db_env, workers=2, keep_log=ctx.log(result.name)
        ) as server:
            supervisor = server.process.pid
            deadline = time.monotonic() + servers.READY_TIMEOUT_S
            while len(procfs.worker_pids(supervisor)) < 2:
                if time.monotonic() > deadline:
                    raise ServiceError(f"no 2 workers under pid {supervisor}")
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
                before = procfs.worker_pids(supervisor)
                victim = before[0]
                in_flight_bound = procfs.established_connections(victim, server.port)
                killed_at = now()
                os.kill(victim, signal.SIGKILL)
                result.events.append((killed_at, f"worker {victim} killed"))
                workers = before
                while now() < killed_at + WORKER_REPLACED_S:
                    workers = procfs.worker_pids(supervisor)
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
            "errors",
            "failed requests (wrk and probes)",
            wrk_result.errors + failures,
            in_flight_bound,
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
            **wrk_figures(wrk_result),
        }
        return result


WORKER_KILL = WorkerKill(
    "worker-kill",
    "one of 2 workers SIGKILLed under load: replaced, errors only on its connections",
)
