"""The routed scenarios' apps: a typical JSON route among the generated service's own routes,
and bare FastAPI (alone or with a peer stack) carrying the same route table.

One module for every side, chosen by BULWARK_STACK, so the measured route is the very same
function everywhere:

- `service`: the generated project's `create_app()` (BULWARK_PACKAGE), padded with dummy routes
  to BULWARK_ROUTES routes in all (0: no padding), the measured route last;
- `bare`: FastAPI with no route of its own (no docs), then BULWARK_ROUTE_TABLE, the service's
  table as `python routed.py` prints it, with trivial handlers and the measured route;
- `naive` and `loopguard`: `bare` plus the stacks the source documents assemble (their
  libraries come from Bulwark's dev environment, BULWARK_PEER_PATH, after the project's own).

It runs on the generated project's interpreter and imports nothing from Bulwark.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

MEASURED_PATH = "/bench/items/{item_id}"
# A padding route per resource, as a service with many resources has; distinct first segments.
PADDING_PATH = "/resource-{index:03d}/{{item_id}}"
# slowapi's per-route limit in the naive stack: counted on every request, never reached.
NAIVE_LIMIT = "1000000/minute"
# The naive stack's request timeout, as the source documents set it.
NAIVE_TIMEOUT_S = 30.0

Table = list[dict[str, Any]]


class BenchItem(BaseModel):
    id: int
    name: str
    q: str | None = None


async def bench_item(item_id: int, q: str | None = None) -> BenchItem:
    """The measured route: a path parameter, a query parameter, a small validated response."""
    return BenchItem(id=item_id, name=f"item {item_id}", q=q)


async def trivial() -> dict[str, str]:
    """Every other route of a mirrored table: matched in the scan, never called under load."""
    return {"status": "ok"}


def add_bench_routes(app: FastAPI, total: int = 0) -> None:
    """Pad `app` with dummy routes to `total` routes (0: none), then add the measured route."""
    padding = total - len(app.routes) - 1 if total else 0
    if padding < 0:
        raise ValueError(f"the app has {len(app.routes)} routes already; {total} asked for")
    for index in range(padding):
        app.add_api_route(PADDING_PATH.format(index=index), trivial, methods=["GET"])
    app.add_api_route(MEASURED_PATH, bench_item, methods=["GET"])


def table(app: FastAPI) -> Table:
    """The app's routes in matching order: each path with its methods."""
    found: Table = []
    for route in app.routes:
        methods = getattr(route, "methods", None)
        if not methods:
            raise ValueError(f"cannot mirror {type(route).__name__} {route!r}: it has no methods")
        found.append({"path": getattr(route, "path", ""), "methods": sorted(methods)})
    return found


def mirror(routes: Table, measured: Callable[..., Awaitable[Any]] = bench_item) -> FastAPI:
    """Bare FastAPI with exactly `routes`, in order: `measured` at the measured path."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    for route in routes:
        handler = measured if route["path"] == MEASURED_PATH else trivial
        app.add_api_route(route["path"], handler, methods=list(route["methods"]))
    return app


def service() -> FastAPI:
    main = importlib.import_module(f"{os.environ['BULWARK_PACKAGE']}.main")
    app: FastAPI = main.create_app()
    add_bench_routes(app, int(os.environ.get("BULWARK_ROUTES", "0")))
    return app


def _routes() -> Table:
    routes: Table = json.loads(os.environ["BULWARK_ROUTE_TABLE"])
    return routes


def bare() -> FastAPI:
    return mirror(_routes())


def _peer_libraries() -> None:
    """The peers' libraries from Bulwark's environment, after the project's own packages, so
    fastapi, starlette and uvicorn stay the project's."""
    path = os.environ.get("BULWARK_PEER_PATH")
    if path and path not in sys.path:
        sys.path.append(path)


def naive() -> FastAPI:
    """What the source documents assemble: a timeout and a timing/request-id middleware as
    BaseHTTPMiddleware, slowapi's per-route limit, prometheus-fastapi-instrumentator."""
    _peer_libraries()
    from prometheus_fastapi_instrumentator import Instrumentator
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address
    from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

    limiter = Limiter(key_func=get_remote_address)

    @limiter.limit(NAIVE_LIMIT)
    async def limited_item(request: Request, item_id: int, q: str | None = None) -> BenchItem:
        return await bench_item(item_id, q)

    class TimeoutMiddleware(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            try:
                return await asyncio.wait_for(call_next(request), NAIVE_TIMEOUT_S)
            except TimeoutError:
                return JSONResponse({"detail": "request timed out"}, status_code=504)

    class TimingMiddleware(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            started = time.perf_counter()
            response = await call_next(request)
            response.headers["X-Request-ID"] = uuid.uuid4().hex
            response.headers["X-Process-Time"] = f"{time.perf_counter() - started:.6f}"
            return response

    app = mirror(_routes(), limited_item)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    app.add_middleware(TimeoutMiddleware)
    app.add_middleware(TimingMiddleware)
    Instrumentator().instrument(app)
    return app


def loopguard() -> FastAPI:
    """Bare FastAPI plus fastapi-loopguard in its documented production form (log only,
    adaptive threshold)."""
    _peer_libraries()
    from fastapi_loopguard import LoopGuardConfig, LoopGuardMiddleware

    app = mirror(_routes())
    config = LoopGuardConfig(enforcement_mode="log", adaptive_threshold=True)
    app.add_middleware(LoopGuardMiddleware, config=config)
    return app


STACKS: dict[str, Callable[[], FastAPI]] = {
    "service": service,
    "bare": bare,
    "naive": naive,
    "loopguard": loopguard,
}


def __getattr__(name: str) -> Any:
    """`routed:app` is built on first access, for the stack BULWARK_STACK names (PEP 562)."""
    if name == "app":
        application = STACKS[os.environ["BULWARK_STACK"]]()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # the harness reads the service's table this way
    print(json.dumps(table(service())))
