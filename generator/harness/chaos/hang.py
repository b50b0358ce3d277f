"""`hang`: a request blocks one of two uvicorn workers' event loop forever, under load.

uvicorn's supervisor pings its workers from a thread of theirs, so a worker whose loop is stuck
still looks alive; the loop monitor's watchdog has to end it (exit status 70) for the
supervisor to start a new one. The blocking route lives in the harness's wrapper app
(apps/hang_service.py), never in the generated service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass

import httpx

from generator.harness import apps, procfs, servers
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

# The service's LOOP_WATCHDOG_S in this run: shorter than the production 10 s so the scenario
# takes seconds; the path (detection, stacks, exit, replacement) is the same.
WATCHDOG_S = 3.0
# The target: a new worker within the watchdog plus this. After the watchdog fires, the worker
# logs its stacks and flushes its log queue (at most 1 s), answers uvicorn's supervisor one last
# time (so a health ping in flight does not wait out its 5 s timeout) and exits; the supervisor
# looks every 0.5 s and starts the new process at once. Seen here: 3.2-3.6 s with a 3 s watchdog.
REPLACED_SLACK_S = 5.0
# The status the loop monitor's watchdog exits with.
WATCHDOG_EXIT_CODE = 70
# wrk's request timeout here: past the whole stall, so a stuck request is one error, not one
# every 2 s (wrk's default) for as long as the worker hangs.
WRK_TIMEOUT_S = 30


@dataclass(frozen=True, slots=True)
class Hang(Fault):
    async def run(self, ctx: Context) -> Result:
        """Block one worker's loop under load: it is replaced within the bound, the other
        serves throughout, and only the requests on the stuck worker's connections fail."""
        path = load_path(ctx)
        result = Result(self.name, settings=shared_settings(ctx, LOOP_WATCHDOG_S=f"{WATCHDOG_S:g}"))
        zero, now = clock()
        env = {
            **os.environ,
            **ctx.db_env,
            "BULWARK_PACKAGE": ctx.project.package_name,
            **ctx.project.settings_env({"ENVIRONMENT": "prod", **result.settings}),
        }
        app_args = ["--app-dir", str(apps.HANG_SERVICE.parent), f"{apps.HANG_SERVICE.stem}:app"]
        bound_s = WATCHDOG_S + REPLACED_SLACK_S
        with servers.serve("service", app_args, project=ctx.project, env=env, workers=2) as server:
            supervisor = server.process.pid
            before = await _two_workers(supervisor)
            probe = Probe(
                server.url(""),
                [("load", path), ("load", path), ("load", path), ("load", path)],
                zero=zero,
                timeout_s=bound_s + 5.0,
            )
            load = BackgroundWrk(
                server.url(path), connections=ctx.connections, cpu=WRK_CPU, timeout_s=WRK_TIMEOUT_S
            )
            replaced_at: float | None = None
            victim: int | None = None
            async with (
                load,
                probing(probe),
                httpx.AsyncClient(timeout=bound_s + 5.0, trust_env=False) as hanger,
            ):
                await asyncio.sleep(WARM_S)
                hung_at = now()
                hang = asyncio.create_task(hanger.get(server.url("/hang")))
                result.events.append((hung_at, "GET /hang sent"))
                # Its worker now holds the hang's connection and those it had: their requests
                # are the ones that may fail.
                await asyncio.sleep(0.2)
                connections = {
                    pid: procfs.established_connections(pid, server.port) for pid in before
                }
                workers = before
                while now() < hung_at + bound_s + 1.0:
                    workers = procfs.worker_pids(supervisor)
                    if len(workers) == 2 and set(workers) != set(before):
                        replaced_at = now()
                        victim = next(iter(set(before) - set(workers)), None)
                        new = ", ".join(map(str, set(workers) - set(before)))
                        result.events.append((replaced_at, f"worker {victim} replaced by {new}"))
                        break
                    await asyncio.sleep(0.05)
                # Let the new worker start and the load settle on both.
                await asyncio.sleep(STEADY_S * 2)
                wrk_result = await load.stop()
                with contextlib.suppress(httpx.HTTPError):
                    await hang
            server.check_alive()
            log = server.log.read_text(errors="replace")
        kept = ctx.log(result.name)
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(log)
        exit_line = _watchdog_line(log, victim)
        result.samples = probe.samples

        in_flight_bound = connections.get(victim, 0) if victim is not None else 0
        failures = sum(not s.ok for s in probe.samples)
        replaced_s = (replaced_at - hung_at) if replaced_at is not None else float("inf")
        result.below(
            "replaced_s",
            "stuck worker replaced by a new process",
            round(replaced_s, 3),
            bound_s,
            "s",
        )
        result.equal("workers_after", "worker processes after", len(workers), 2)
        result.equal(
            "watchdog_exit",
            f"the stuck worker logged its stacks and exited {WATCHDOG_EXIT_CODE}",
            int(exit_line is not None),
            1,
        )
        result.at_most(
            "errors",
            "failed requests (wrk and probes)",
            wrk_result.errors + failures,
            in_flight_bound,
        )
        stalled_until = replaced_at if replaced_at is not None else now()
        result.at_least(
            "served_while_stuck",
            "probe answers while the worker was stuck (the other worker serving)",
            sum(s.ok for s in probe.samples if hung_at + 0.5 <= s.sent_s < stalled_until),
            1,
        )
        result.equal(
            "failures_after_replacement",
            "probe failures sent once the new worker was up",
            sum(not s.ok for s in probe.samples if s.sent_s >= stalled_until),
            0,
        )
        result.figures = {
            "path": path,
            "watchdog_s": WATCHDOG_S,
            "stuck_worker_connections": in_flight_bound,
            "probe_failures": failures,
            "watchdog_log": exit_line,
            **wrk_figures(wrk_result),
        }
        return result


async def _two_workers(supervisor: int) -> list[int]:
    deadline = time.monotonic() + servers.READY_TIMEOUT_S
    while len(workers := procfs.worker_pids(supervisor)) < 2:
        if time.monotonic() > deadline:
            raise ServiceError(f"no 2 workers under pid {supervisor}")
        await asyncio.sleep(0.1)
    return workers


def _watchdog_line(log: str, pid: int | None) -> dict[str, object] | None:
    """The stuck worker's last words: the monitor's JSON line naming its pid and exit status."""
    for line in log.splitlines():
        if '"event loop stuck' not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("pid") == pid and record.get("exit_code") == WATCHDOG_EXIT_CODE:
                return {
                    key: record[key] for key in ("route", "stuck_s", "exit_code") if key in record
                } | {"threads": len(record.get("threads", {}))}
    return None


HANG = Hang(
    "hang",
    "a request blocks one of 2 workers' event loop forever under load: the loop monitor ends "
    "it and the supervisor replaces it; errors only on its connections",
    features=("loop_monitor",),
)
