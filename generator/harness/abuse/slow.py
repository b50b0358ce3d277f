"""Slowloris: many connections that never finish their request, legitimate clients beside them.

Half trickle a header line, half announce a body and trickle it, one byte a second each. Behind
nginx (which buffers both before it calls the app) legitimate p99 must stay within the factor
of its unloaded p99; straight at the app port only the header half is sent: a slow body there
holds a request slot until the service's body deadline, which is why the app port is meant to
sit behind a proxy (the generated docs say so), and is measured by `oversized`'s figures instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from generator.harness.abuse import wire
from generator.harness.abuse.scenario import Attack, Context, check_legit, check_loop
from generator.harness.abuse.service import fronted, port_of, under_attack, watched
from generator.harness.servers import RunningServer
from generator.harness.suite import Result

# Slow connections, the count the target is set for.
CONNECTIONS = 200
_EVERY_S = 1.0


def heads(path: str, connections: int, *, bodies: bool) -> list[bytes]:
    """What each slow connection sends before it starts trickling."""
    header = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
    body = wire.request("POST", "/items", [("Content-Type", "application/json")], length=10_000)
    if not bodies:
        return [header] * connections
    return [header if n % 2 else body for n in range(connections)]


async def slow_clients(port: int, sent: Sequence[bytes], seconds: float) -> list[wire.Answer]:
    until = time.monotonic() + seconds
    return list(
        await asyncio.gather(
            *(wire.trickle(port, head, every_s=_EVERY_S, until=until) for head in sent)
        )
    )


def slow_figures(result: Result, key: str, answers: Sequence[wire.Answer]) -> None:
    result.figures[f"{key}_slow_connections"] = len(answers)
    result.figures[f"{key}_slow_held_to_end"] = sum(a.error == "held" for a in answers)
    result.figures[f"{key}_slow_statuses"] = {
        str(status): sum(a.status == status for a in answers)
        for status in sorted({a.status for a in answers if a.status is not None})
    }


@dataclass(frozen=True, slots=True)
class Slowloris(Attack):
    async def run(self, ctx: Context, server: RunningServer) -> Result:
        result = Result(self.name)
        async with watched(server) as readings:
            with fronted(ctx, server) as proxied:
                base = proxied.url("")
                sent = heads(ctx.item_path, CONNECTIONS, bodies=True)
                attack = slow_clients(port_of(base), sent, ctx.window_s)
                behind = await under_attack(base, ctx.item_path, attack)
            direct_sent = heads(ctx.item_path, CONNECTIONS, bodies=False)
            direct_attack = slow_clients(server.port, direct_sent, ctx.window_s)
            direct = await under_attack(server.url(""), ctx.item_path, direct_attack)
        check_legit(result, "nginx", behind.baseline, behind.attacked, factor=ctx.p99_factor)
        check_legit(result, "direct", direct.baseline, direct.attacked, factor=None)
        check_loop(result, ctx, readings["before"], readings["after"])
        slow_figures(result, "nginx", behind.outcome)
        slow_figures(result, "direct", direct.outcome)
        return result


SLOWLORIS = Slowloris(
    "slowloris",
    f"{CONNECTIONS} slow connections through nginx, then slow headers at the app port",
    features=("postgres", "metrics", "loop_monitor"),
    targets=("nginx",),
)
