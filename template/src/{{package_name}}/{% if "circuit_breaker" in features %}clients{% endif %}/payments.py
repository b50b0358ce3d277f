"""Example outbound dependency: a payments service over one shared `httpx.AsyncClient`.

The pattern to copy for any HTTP dependency: one client for the process (connection reuse),
opened and closed by the lifespan; each call bounded by the smaller of its own timeout and the
request deadline; idempotent reads retried with backoff; everything behind a breaker (3
failures -> open, 30 s recovery by default), so a dead dependency costs a fast 503, not a
thread of waiting requests. Its check() stays true: a dependency's outage must not pull every
replica out of the load balancer; the breaker state is in details() instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpx

from ..observability.stats import Family
from ..resilience.breaker import CircuitBreaker
from ..resilience.retry import retry_idempotent
from ..settings import Settings

CLOSE_TIMEOUT_S = 5.0


class PaymentsUnavailable(Exception):
    """The payments service failed (no answer, a 5xx, an unexpected 4xx) after the attempts."""


def _is_failure(exc: Exception) -> bool:
    """What says the dependency is unwell: no answer, or a 5xx. A 4xx is the caller's error."""
    return isinstance(exc, httpx.TransportError | PaymentsUnavailable)


class PaymentsClient:
    """Lifespan resource: the shared client, its breaker and the calls the service makes."""

    name = "payments"

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None):
        self._base_url = settings.payments_url
        self._timeout_s = settings.payments_timeout_s
        self._attempts = settings.payments_retry_attempts
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.breaker = CircuitBreaker(
            "payments",
            failure_threshold=settings.payments_failure_threshold,
            recovery_s=settings.payments_recovery_s,
            success_threshold=settings.payments_success_threshold,
            is_failure=_is_failure,
        )

    async def start(self) -> None:
        # In a thread: making the client loads the CA bundle into an SSL context, ~200 ms of
        # blocking work that stalled the loop and every resource starting beside it.
        self._client = await asyncio.to_thread(
            httpx.AsyncClient,
            base_url=self._base_url,
            timeout=self._timeout_s,
            transport=self._transport,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    async def stop(self) -> None:
        if self._client is None:
            return
        client, self._client = self._client, None
        await client.aclose()

    async def check(self) -> bool:
        return True

    def details(self) -> dict[str, object]:
        return {"started": self._client is not None, "breaker": self.breaker.details()}

    def families(self) -> Iterable[Family]:
        return self.breaker.families()

    async def get_payment(self, payment_id: str) -> dict[str, Any] | None:
        """The payment, None if unknown; `CircuitOpen` or `PaymentsUnavailable` otherwise."""

        async def attempt(time_left: float | None) -> dict[str, Any] | None:
            timeout = self._timeout_s if time_left is None else min(self._timeout_s, time_left)
            async with self.breaker.guard():
                response = await self.client.get(f"/payments/{payment_id}", timeout=timeout)
                if response.status_code >= 500:
                    raise PaymentsUnavailable(f"payments answered {response.status_code}")
            if response.status_code == 404:
                return None
            response.raise_for_status()
            found: dict[str, Any] = response.json()
            return found

        try:
            payment: dict[str, Any] | None = await retry_idempotent(
                attempt, retry_on=_is_failure, attempts=self._attempts
            )
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            raise PaymentsUnavailable(f"payments call failed: {exc!r}") from exc
        return payment

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("the payments client is used before the lifespan started it")
        return self._client
