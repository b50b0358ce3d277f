"""Floods of requests built to cost the service: huge, malformed, unencodable, or probes.

Each flood runs at the app port and, where a proxy changes the outcome, through nginx too.
Abusive requests must be refused with a 4xx (or a closed connection) in a small answer; the
event loop must never be held past the loop monitor's 100 ms bucket; legitimate clients beside
the flood keep their p99 within the factor of their unloaded p99 behind nginx.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from generator.harness.abuse import wire
from generator.harness.abuse.scenario import (
    Attack,
    Context,
    check_abusive,
    check_legit,
    check_loop,
    probe_queries_allowed,
    statuses,
)
from generator.harness.abuse.service import fronted, port_of, under_attack, watched
from generator.harness.servers import RunningServer
from generator.harness.suite import Result

_JSON = [("Content-Type", "application/json")]
BIG = 4 * 1024 * 1024
DEEP = 100_000


def oversized(path: str) -> list[bytes]:
    """A megabyte header line, then 4 MB bodies: valid JSON, invalid JSON, streamed."""
    big_name = json.dumps({"name": "a" * BIG}).encode()
    return [
        wire.request("GET", path, [("X-Pad", "a" * (1024 * 1024))]),
        wire.request("POST", "/items", _JSON, big_name),
        wire.request("POST", "/items", _JSON, b"{" * BIG),
        wire.request("POST", "/items", [*_JSON, ("Transfer-Encoding", "chunked")], big_name),
    ]


def malformed() -> list[bytes]:
    """Cheap to send, possibly costly to parse: broken JSON and deep nesting."""
    return [
        wire.request("POST", "/items", _JSON, b'{"name": "x",'),
        wire.request("POST", "/items", _JSON, b"[" * DEEP + b"]" * DEEP),
        wire.request("POST", "/items", _JSON, b'{"name": {"a": ' * 5_000 + b"1" + b"}" * 5_000),
        wire.request("POST", "/items", _JSON, b"not json at all"),
    ]


def bad_fields(item_path: str) -> list[bytes]:
    """NUL, lone surrogates and bytes that are not UTF-8 in a body, a query and a path."""
    return [
        wire.request("POST", "/items", _JSON, b'{"name": "a\\u0000b"}'),
        wire.request("POST", "/items", _JSON, b'{"name": "ok", "description": "\\u0000"}'),
        wire.request("POST", "/items", _JSON, b'{"name": "\\ud800"}'),
        wire.request("POST", "/items", _JSON, b'{"name": "\xff\xfe"}'),
        wire.request("POST", "/items", _JSON, b'{"name": "a\x00b"}'),
        wire.request("GET", "/items/lookup?ids=1%00"),
        wire.request("GET", "/items/lookup?ids=%ff"),
        wire.request("GET", "/items?after=%00"),
        wire.request("GET", item_path + "%00"),
        wire.request("GET", "/items/%ff%fe"),
    ]


def bad_headers(item_path: str) -> list[bytes]:
    """The same in header values the service reads (request id, forwarding): no 5xx."""
    return [
        wire.request("GET", item_path, [("X-Request-Id", "\xff\xfe\x80")]),
        wire.request("GET", item_path, [("X-Forwarded-For", "\xff\xfe")]),
        wire.request("GET", item_path, [("Forwarded", "for=\xff")]),
    ]


def cycling(requests: Sequence[bytes]) -> Callable[[int], bytes]:
    return lambda i: requests[i % len(requests)]


@dataclass(frozen=True, slots=True)
class Flood(Attack):
    """`requests` in turn at `rate` a second: through nginx beside legitimate clients (p99
    target), then at the app port (figures for the p99)."""

    build: Callable[[Context], list[bytes]] = lambda ctx: []
    rate: float = 20.0
    concurrency: int = 64

    async def run(self, ctx: Context, server: RunningServer) -> Result:
        result = Result(self.name)
        make = cycling(self.build(ctx))
        async with watched(server) as readings:
            with fronted(ctx, server) as proxied:
                base = proxied.url("")
                behind = await under_attack(base, ctx.item_path, self._flood(base, make, ctx))
            direct_base = server.url("")
            direct = await under_attack(
                direct_base, ctx.item_path, self._flood(direct_base, make, ctx)
            )
        for key, measured in (("nginx", behind), ("direct", direct)):
            answers, achieved = measured.outcome
            check_abusive(result, key, f"{key} abuse", answers)
            result.figures[f"{key}_rate_per_s"] = round(achieved, 1)
        check_legit(result, "nginx", behind.baseline, behind.attacked, factor=ctx.p99_factor)
        check_legit(result, "direct", direct.baseline, direct.attacked, factor=None)
        check_loop(result, ctx, readings["before"], readings["after"])
        return result

    async def _flood(
        self, base: str, make: Callable[[int], bytes], ctx: Context
    ) -> tuple[list[wire.Answer], float]:
        return await wire.flood(
            port_of(base),
            make,
            rate=self.rate,
            duration_s=ctx.window_s,
            concurrency=self.concurrency,
        )


@dataclass(frozen=True, slots=True)
class BadText(Attack):
    """Unencodable text in fields and headers, each sent a few times at the app port."""

    repeat: int = 3

    async def run(self, ctx: Context, server: RunningServer) -> Result:
        result = Result(self.name)
        fields = [
            await wire.exchange(server.port, data)
            for data in bad_fields(ctx.item_path) * self.repeat
        ]
        headers = [
            await wire.exchange(server.port, data)
            for data in bad_headers(ctx.item_path) * self.repeat
        ]
        check_abusive(result, "fields", "bad text in fields", fields)
        result.equal(
            "headers_5xx",
            "bad bytes in headers: 5xx answers",
            sum(1 for a in headers if a.status is not None and a.status >= 500),
            0,
        )
        result.figures["headers_statuses"] = statuses(headers)
        return result


# The pool's acquires count every query the service makes; a probe flood makes nothing else.
ACQUIRES = "db_pool_acquire_wait_seconds_count"


@dataclass(frozen=True, slots=True)
class ReadyFlood(Attack):
    """`/ready` at `rate` a second at the app port (probes skip every guard): database queries
    at most one per second per process, counted by the pool's own acquire counter."""

    rate: float = 200.0

    async def run(self, ctx: Context, server: RunningServer) -> Result:
        result = Result(self.name)
        ready = wire.request("GET", "/ready")
        async with watched(server) as readings:
            started_at = time.monotonic()
            answers, achieved = await wire.flood(
                server.port, lambda _: ready, rate=self.rate, duration_s=ctx.window_s
            )
            elapsed = time.monotonic() - started_at
        queries = round(readings["after"][ACQUIRES] - readings["before"][ACQUIRES])
        allowed = probe_queries_allowed(elapsed)
        result.at_most("ready_db_queries", f"database queries in {elapsed:.1f} s", queries, allowed)
        not_ok = sum(1 for a in answers if a.status != 200)
        result.equal("ready_not_200", "/ready answers not 200", not_ok, 0)
        result.figures["ready_requests"] = len(answers)
        result.figures["ready_rate_per_s"] = round(achieved, 1)
        result.figures["db_queries_per_s"] = round(queries / elapsed, 2)
        result.figures["ready_statuses"] = statuses(answers)
        return result


OVERSIZED = Flood(
    "oversized",
    "a 1 MB header line and 4 MB bodies (JSON, invalid, chunked) at 20/s",
    features=("postgres", "metrics", "loop_monitor"),
    targets=("nginx",),
    build=lambda ctx: oversized(ctx.item_path),
    rate=20.0,
    concurrency=32,
)
INVALID_JSON = Flood(
    "invalid-json",
    f"broken and {DEEP}-deep nested JSON bodies at 500/s",
    features=("postgres", "metrics", "loop_monitor"),
    targets=("nginx",),
    build=lambda ctx: malformed(),
    rate=500.0,
)
BAD_TEXT = BadText(
    "bad-text",
    "NUL, lone surrogates and invalid UTF-8 in bodies, queries, paths and headers",
    features=("postgres",),
)
READY_FLOOD = ReadyFlood(
    "ready-flood",
    "GET /ready at 200/s at the app port",
    features=("postgres", "metrics"),
)
