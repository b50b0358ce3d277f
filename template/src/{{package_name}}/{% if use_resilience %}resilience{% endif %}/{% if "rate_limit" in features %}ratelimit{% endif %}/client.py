"""Which client a request counts against: the peer, or what a trusted proxy says it forwarded.

The peer, unless the peer is a trusted proxy (`FORWARDED_ALLOW_IPS`, the list uvicorn trusts
too): then the right-most untrusted hop of `Forwarded` or `X-Forwarded-For`. A header from
anyone else is ignored, so clients cannot pick their bucket.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable

from starlette.types import Scope


class ClientAddress:
    """Finds a request's client address; the trusted list is parsed once, not per request."""

    def __init__(self, trusted_proxies: str) -> None:
        self._trusted = _trust(trusted_proxies)

    def resolve(self, scope: Scope) -> str:
        """The peer, or the right-most untrusted forwarded hop when the peer is a trusted proxy."""
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        forwarded = None
        for name, value in scope["headers"]:
            if name == b"forwarded":
                forwarded = _forwarded_for(value.decode("latin-1"))
                break
            if name == b"x-forwarded-for":
                forwarded = [hop.strip() for hop in value.decode("latin-1").split(",")]
        if not forwarded or not self._trusted(peer):
            return peer
        for hop in reversed(forwarded):
            if not self._trusted(hop):
                return hop
        return forwarded[0]


def _forwarded_for(header: str) -> list[str]:
    """The `for=` hops of an RFC 7239 `Forwarded` header, ports and brackets removed."""
    hops = []
    for element in header.split(","):
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.lower() == "for":
                value = value.strip('"')
                if value.startswith("["):
                    value = value[1 : value.find("]")]
                elif value.count(":") == 1:
                    value = value.partition(":")[0]
                hops.append(value)
    return hops


def _trust(spec: str) -> Callable[[str], bool]:
    """A predicate for `FORWARDED_ALLOW_IPS`: comma-separated addresses or networks, `*` = all."""
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    if "*" in entries:
        return lambda _address: True
    try:
        networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]
    except ValueError as exc:
        raise ValueError(f"forwarded_allow_ips: {exc}") from None

    @functools.lru_cache(maxsize=1024)
    def trusted(address: str) -> bool:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in networks)

    return trusted
