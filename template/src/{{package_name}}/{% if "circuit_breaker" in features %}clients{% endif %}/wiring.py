"""The circuit_breaker feature: the example payments client, its route and the 503 for open breakers."""

from __future__ import annotations

from ..api import payments
from ..resilience.breaker import CircuitOpen, circuit_open_handler
from ..settings import Settings
from ..wiring import Parts
from .payments import PaymentsClient


def wire(settings: Settings, parts: Parts) -> None:
    payments_client = PaymentsClient(settings)
    parts.resources.append(payments_client)
    parts.state["payments"] = payments_client
    parts.exception_handlers[CircuitOpen] = circuit_open_handler
    parts.routers.append(payments.router)
