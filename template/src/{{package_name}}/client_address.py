"""Who the client is: the socket peer, or what the proxies we trust say they forwarded.

The service's one rule (uvicorn's own proxy-header rewriting is off, see `__main__`); the gate
applies it to every request's `scope["client"]`, so rate limits, logs and `request.client` agree:

- From a peer outside `FORWARDED_ALLOW_IPS` the client is the peer: any forwarding header it
  sent is its own claim, ignored.
- From a trusted proxy, `X-Forwarded-For` (or RFC 7239 `Forwarded`, only when
  `FORWARDED_HEADER=forwarded`) is read right to left, skipping trusted proxies: the first
  untrusted hop is the client. Hops on its left were written by the client, so they are never
  read, whatever they say.
- A hop that is not an IP address ends the walk at the last address known: nothing a proxy
  could not name is believed, and garbage never becomes a client (or a rate-limit bucket).
- Addresses are normalised: an IPv4-mapped IPv6 address is its IPv4 address, so
  `::ffff:127.0.0.1` is the trusted 127.0.0.1.

Cost: parsed hops and trust answers are cached, so a request costs a cache lookup per hop.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Literal

from starlette.types import Scope

ForwardedHeader = Literal["x-forwarded-for", "forwarded"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = frozenset({"http", "https"})
# Distinct hop strings remembered; attacker-chosen strings only evict each other.
CACHE_SIZE = 4096


def parse_trusted(spec: str) -> tuple[Network, ...]:
    """`FORWARDED_ALLOW_IPS`: comma-separated addresses or networks; ValueError if one is not.

    `*` is refused: trusting every peer lets any client name its own address.
    """
    networks = []
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        if entry == "*":
            raise ValueError(
                "'*' trusts every peer, so any client could choose its own address; "
                "list the proxies' addresses or networks (CIDRs)"
            )
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
        mapped = getattr(network.network_address, "ipv4_mapped", None)
        if mapped is not None and network.prefixlen >= 96:
            network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}", strict=False)
        networks.append(network)
    return tuple(networks)


def normalise(text: str) -> str | None:
    """An address as a hop or peer may carry it (brackets, port, mapped) as a plain IP, or None."""
    text = text.strip().strip('"')
    if text.startswith("["):  # "[2001:db8::1]:443" (RFC 7239 and some proxies)
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class ClientAddress:
    """The trust list and header choice, parsed once; `resolve`/`apply` run per request."""

    def __init__(self, trusted: str, header: ForwardedHeader = "x-forwarded-for") -> None:
        networks = parse_trusted(trusted)
        self._header = header.encode()
        self._rfc7239 = header == "forwarded"

        @functools.lru_cache(maxsize=CACHE_SIZE)
        def hop(text: str) -> tuple[str | None, bool]:
            """A hop or peer: its normalised address (None if not one) and whether we trust it."""
            address = normalise(text)
            if address is None:
                return None, False
            parsed = ipaddress.ip_address(address)
            return address, any(parsed in network for network in networks)

        self._hop = hop

    def resolve(self, scope: Scope) -> tuple[str, bool]:
        """The client's address, and whether the peer is a trusted proxy (its headers count)."""
        address, trusted, _ = self._resolve(scope)
        return address, trusted

    def _resolve(self, scope: Scope) -> tuple[str, bool, bytes | None]:
        """`resolve`, plus the forwarded scheme: one pass over the headers finds both."""
        client = scope.get("client")
        peer = client[0] if client else ""
        address, trusted = self._hop(peer)
        if address is None:
            return peer or "unknown", False, None  # a unix socket or a test client: no IP
        if not trusted:
            return address, False, None
        values: list[bytes] = []
        proto: bytes | None = None
        for name, value in scope["headers"]:
            if name == self._header:
                values.append(value)
            elif name == b"x-forwarded-proto" and proto is None:
                proto = value
        if not values:
            return address, True, proto
        text = b",".join(values).decode("latin-1")
        hops = _forwarded_for(text) if self._rfc7239 else text.split(",")
        for text in reversed(hops):
            hop_address, hop_trusted = self._hop(text)
            if hop_address is None:
                break  # not an address: nothing on its left can be believed
            address = hop_address
            if not hop_trusted:
                break
        return address, True, proto

    def apply(self, scope: Scope) -> None:
        """Set `scope["client"]` (and the scheme a trusted proxy forwarded) by the rule above."""
        client = scope.get("client")
        if client is None:
            return
        address, trusted, proto = self._resolve(scope)
        # A forwarded client's port is unknown; a peer keeps its own.
        scope["client"] = (address, 0 if trusted else client[1])
        if proto is not None:
            scheme = proto.decode("latin-1").strip()
            if scheme in SCHEMES:
                scope["scheme"] = scheme


def _forwarded_for(header: str) -> list[str]:
    """The `for=` values of an RFC 7239 `Forwarded` header, one per element, in order."""
    hops = []
    for element in header.split(","):
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.lower() == "for":
                hops.append(value)
                break
        else:
            hops.append("")  # an element without `for=`: a hop we cannot name
    return hops
