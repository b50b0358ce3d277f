"""Escaping the per-client rate limit by rewriting forwarding headers.

Each attacking client connects from its own 127/8 address (so clients never share a bucket by
accident) and sends three times the limit, every request claiming another origin. The limit
holds when each client is refused from its limit on, whatever it claims. Moving-window counting
keeps the count exact across a minute boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from generator.harness.abuse import wire
from generator.harness.abuse.scenario import (
    TARGET_DIRS,
    Attack,
    Context,
    SpoofCount,
    check_spoofing,
    count_spoof,
)
from generator.harness.abuse.service import deploy_settings, fronted, port_of
from generator.harness.servers import RunningServer
from generator.harness.suite import Result

Headers = Callable[[int], list[tuple[str, str]]]

# What an attacker writes, request `i` of a run (documentation ranges, RFC 5737 / 3849).
FORGED: Mapping[str, Headers] = {
    # RFC 7239, believed first by a service that reads it at all.
    "forwarded": lambda i: [("Forwarded", f"for=198.51.100.{i + 1}")],
    # A lone hop: uvicorn with `*` takes it as the client.
    "xff-single": lambda i: [("X-Forwarded-For", f"198.51.100.{i + 1}")],
    # What an appending proxy passes on: the forged hop left of the address the proxy saw.
    "xff-appended": lambda i: [("X-Forwarded-For", f"192.0.2.{i + 1}, 203.0.113.9")],
    # Not an address at all: must not become a bucket of its own.
    "non-ip": lambda i: [("X-Forwarded-For", f"garbage{i}")],
}


def rotating(network: str) -> Headers:
    """Behind a trusted hop, request `i` forwarded for host `i + 1` of `network`::/64."""
    return lambda i: [("X-Forwarded-For", f"{network}::{i + 1:x}")]


ROTATED: Mapping[str, Headers] = {
    "ipv6-net-a": rotating("2001:db8:0:a"),
    "ipv6-net-b": rotating("2001:db8:0:b"),
}


def limited(ctx: Context) -> dict[str, str]:
    """The low per-client limit the spoofing attacks try to escape, counted exactly."""
    return {"RATE_LIMIT_DEFAULT": f"{ctx.limit}/minute", "RATE_LIMIT_STRATEGY": "moving-window"}


async def clients(
    port: int, path: str, forged: Mapping[str, Headers], sources: Mapping[str, str], limit: int
) -> dict[str, SpoofCount]:
    """Each forging client sends 3 x limit requests, one after another, from its source."""
    counts = {}
    for name, headers in forged.items():
        answers = [
            await wire.exchange(port, wire.request("GET", path, headers(i)), source=sources[name])
            for i in range(3 * limit)
        ]
        counts[name] = count_spoof([answer.status for answer in answers])
    return counts


def own_sources(forged: Mapping[str, Headers], first: int) -> dict[str, str]:
    """A 127/8 address per client: 127.0.0.<first>, <first + 1>..."""
    return {name: f"127.0.0.{first + n}" for n, name in enumerate(forged)}


@dataclass(frozen=True, slots=True)
class Spoof(Attack):
    """Forging clients, each from its own source, under a deployment config's settings; at the
    app port, or through the rendered nginx site with `behind_nginx`."""

    config: str = "kubernetes"
    behind_nginx: bool = False
    first_source: int = 20

    def settings(self, ctx: Context) -> dict[str, str]:
        shipped = deploy_settings(ctx.project.root, ctx.project.env_prefix, self.config)
        return {**shipped, **limited(ctx)}

    async def run(self, ctx: Context, server: RunningServer) -> Result:
        result = Result(self.name)
        sources = own_sources(FORGED, self.first_source)
        if self.behind_nginx:
            with fronted(ctx, server) as proxied:
                port = port_of(proxied.url(""))
                counts = await clients(port, ctx.item_path, FORGED, sources, ctx.limit)
        else:
            counts = await clients(server.port, ctx.item_path, FORGED, sources, ctx.limit)
        check_spoofing(result, counts, ctx.limit)
        return result


@dataclass(frozen=True, slots=True)
class Ipv6Rotation(Attack):
    """An IPv6 client rotating its address inside its /64, each request a new /128.

    Loopback has one IPv6 address (::1), so the rotating addresses arrive as they would from a
    proxy: `X-Forwarded-For` hops sent from 127.0.0.1, the trusted proxy of the default settings
    (and of the VM settings, used when rendered, so it shares spoof-nginx's service). Two /64s,
    one client each: both held at the limit, neither refused early.
    """

    def settings(self, ctx: Context) -> dict[str, str]:
        vm = ctx.project.root / TARGET_DIRS["systemd"]
        prefix = ctx.project.env_prefix
        shipped = deploy_settings(ctx.project.root, prefix, "systemd") if vm.is_dir() else {}
        return {**shipped, **limited(ctx)}

    async def run(self, ctx: Context, server: RunningServer) -> Result:
        result = Result(self.name)
        sources = {name: "127.0.0.1" for name in ROTATED}
        counts = await clients(server.port, ctx.item_path, ROTATED, sources, ctx.limit)
        check_spoofing(result, counts, ctx.limit)
        return result


SPOOF_K8S = Spoof(
    "spoof-k8s",
    "forged Forwarded/X-Forwarded-For at the app, Kubernetes config.env settings",
    features=("rate_limit", "postgres"),
    targets=("kubernetes",),
)
SPOOF_NGINX = Spoof(
    "spoof-nginx",
    "forged Forwarded/X-Forwarded-For through nginx, systemd env settings",
    features=("rate_limit", "postgres"),
    targets=("nginx", "systemd"),
    config="systemd",
    behind_nginx=True,
    first_source=40,
)
IPV6_ROTATION = Ipv6Rotation(
    "ipv6-rotation",
    "a client rotating through its IPv6 /64, forwarded by the trusted proxy hop",
    features=("rate_limit", "postgres"),
)
