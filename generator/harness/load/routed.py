"""The routed scenarios of `bulwark loadtest`: what a user's own route pays.

A typical JSON route (`GET /bench/items/{item_id}?q=...`, a path and a query parameter, a small
pydantic response) is added after the generated service's own routes, every feature on, prod
settings, the default rate limit off (wrk is one client). The baseline is bare FastAPI carrying
the same route table (same paths and methods, in the same order, read from the service's app at
run time), so routing costs both sides alike and the ratio prices the protections alone.
`routed-50` pads both tables to 50 routes before the measured one; the peer scenarios put bare
FastAPI with a stack from the source documents on the baseline side. apps/routed.py has the
apps.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.harness import apps, servers
from generator.harness.load.scenario import Bench, Scenario, Side, Verdict
from generator.harness.project import Project, run_step

PATH = "/bench/items/7?q=widget"
# Every wrk connection shares one client address: the default per-client limit would refuse.
LIMIT_OFF = (("RATE_LIMIT_DEFAULT", ""),)
# The naive stack counts every request in slowapi; the service then counts them too, at the same
# limit, so both sides pay for the same protection.
LIMIT_NEVER_REACHED = (("RATE_LIMIT_DEFAULT", "1000000/minute"),)
# The libraries each peer stack of apps/routed.py imports, and what the report calls it.
PEER_MODULES = {
    "naive": ("slowapi", "prometheus_fastapi_instrumentator"),
    "loopguard": ("fastapi_loopguard",),
}
STACK_LABELS = {
    "naive": "naive stack: bare + 2 BaseHTTPMiddleware, slowapi, instrumentator",
    "loopguard": "bare + fastapi-loopguard",
}


def app_args() -> list[str]:
    return ["--app-dir", str(apps.ROUTED.parent), f"{apps.ROUTED.stem}:app"]


def service_env(project: Project, routes: int) -> dict[str, str]:
    """What selects the service side of apps/routed.py (its settings come separately)."""
    return {
        "BULWARK_STACK": "service",
        "BULWARK_PACKAGE": project.package_name,
        "BULWARK_ROUTES": str(routes),
        project.environment_var: "prod",
    }


def route_table(project: Project, env: dict[str, str]) -> list[dict[str, Any]]:
    """The service side's routes in matching order, read from its app as it is served."""
    out = run_step(
        [str(project.python), str(apps.ROUTED)],
        cwd=project.root,
        env={**os.environ, **env},
        timeout=60.0,
    )
    routes: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
    return routes


def peer_path(stack: str) -> str | None:
    """Where Bulwark's environment has the stack's libraries ("" when it needs none), or None
    when one is missing."""
    origins = []
    for module in PEER_MODULES.get(stack, ()):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            return None
        origins.append(Path(spec.origin))
    # A library's __init__.py sits one directory below site-packages.
    return str(origins[0].parent.parent) if origins else ""


@dataclass(frozen=True, slots=True)
class Routed(Scenario):
    """The service with the measured route against `stack` with the same route table;
    `routes` pads both to that many routes (0: the service's own plus the measured one)."""

    routes: int = 0
    stack: str = "bare"
    # Targets on the pair medians beside the rps ratio: CPU efficiency (baseline / service CPU
    # per request) at least this, p99 (service / baseline) at most this.
    target_cpu: float | None = None
    target_p99: float | None = None

    def unavailable(self, project: Project) -> str | None:
        if peer_path(self.stack) is None:
            return (
                f"scenario {self.name} needs {', '.join(PEER_MODULES[self.stack])} in Bulwark's "
                "environment; install its dev dependencies with `uv sync`"
            )
        return Scenario.unavailable(self, project)  # slots: no zero-argument super()

    def _service_env(self, bench: Bench) -> dict[str, str]:
        return {
            **bench.service_env(self.service_settings),
            **service_env(bench.project, self.routes),
        }

    def service_server(self, bench: Bench) -> AbstractContextManager[servers.RunningServer]:
        env = {**os.environ, **self._service_env(bench)}
        return servers.serve("service", app_args(), project=bench.project, env=env)

    def baseline_server(self, bench: Bench) -> AbstractContextManager[servers.RunningServer]:
        routes = route_table(bench.project, self._service_env(bench))
        env = {
            **os.environ,
            "BULWARK_STACK": self.stack,
            "BULWARK_ROUTE_TABLE": json.dumps(routes),
            "BULWARK_PEER_PATH": peer_path(self.stack) or "",
        }
        return servers.serve("baseline", app_args(), project=bench.project, env=env)

    def verdict(self, entry: Mapping[str, Any]) -> Verdict:
        judged = Scenario.verdict(self, entry)
        if entry.get("failed") or self.target_cpu is None or self.target_p99 is None:
            return judged
        pairs = entry.get("pairs", {})
        cpu, p99 = pairs.get("cpu", {}).get("median"), pairs.get("p99", {}).get("median")
        return Verdict(
            f"{judged.target}; pair medians: CPU ≥ {self.target_cpu:g}, p99 ≤ {self.target_p99:g}",
            bool(judged.met)
            and cpu is not None
            and cpu >= self.target_cpu
            and p99 is not None
            and p99 <= self.target_p99,
        )

    def figures(self, baseline: Side, service: Side) -> dict[str, Any]:
        """The baseline named when it is a peer stack (the report labels its bars with it)."""
        return {"baseline": STACK_LABELS[self.stack]} if self.stack in STACK_LABELS else {}


ROUTED = Routed(
    "routed",
    "a JSON route among the service's own routes vs bare FastAPI with the same route table",
    PATH,
    service_settings=LIMIT_OFF,
    target_ratio=0.90,
    target_cpu=0.95,
    target_p99=1.2,
)
ROUTED_50 = Routed(
    "routed-50",
    "the routed scenario with both route tables padded to 50 routes",
    PATH,
    service_settings=LIMIT_OFF,
    routes=50,
    target_ratio=1.2,
)
ROUTED_NAIVE = Routed(
    "routed-naive",
    "the routed service vs bare FastAPI + 2 BaseHTTPMiddleware, slowapi, instrumentator",
    PATH,
    service_settings=LIMIT_NEVER_REACHED,
    stack="naive",
    target_ratio=5.0,
)
ROUTED_LOOPGUARD = Routed(
    "routed-loopguard",
    "the routed service vs bare FastAPI + fastapi-loopguard, same route table",
    PATH,
    service_settings=LIMIT_OFF,
    stack="loopguard",
    target_ratio=1.15,
)
