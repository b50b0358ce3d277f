"""Route matching by first path segment: a request tries only the routes that could match it.

The framework's router tries every route in order, ~2 µs each (the last of 16 routes cost
~31 µs a request, measured on this service). The index keeps, per first path segment, the
routes whose path starts with that segment plus every route it cannot index (a parameter in
the first segment, a mount, a host, a route class with its own `matches`), in order; the
framework's own router code then runs over that short list. A route left out cannot match the
request's path, so which route wins, 405 with its Allow header, slash redirects, mounts, 404s
and `scope["route"]`/`scope["path_params"]`/`scope["endpoint"]` are the framework's, unchanged.
Routes added at any time (`app.include_router` after start) are seen: the index puts a list
that flags its own changes in `router.routes`, so a request checks one flag (and that the list
is still the router's) instead of comparing the list (~1 µs a request at 200 routes).
Each time it indexes, it gives every eligible route the fast handler (fast_handler.py), so a
route added late gets it too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette._utils import get_route_path  # the routes' own reading of the path: no drift
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send

from .fast_handler import use_fast_handler

# Routes whose `matches` is one of these read nothing but the path and method; a subclass that
# keeps it (a custom `route_class` changing how requests are handled) is indexed too.
_PATH_MATCHERS = (Route.matches, APIRoute.matches)

RouterApp = Callable[[Any, Scope, Receive, Send], Awaitable[None]]


def first_segment(path: str) -> str:
    """What comes between the first and second `/` of a path: the index's key."""
    return path[1:].partition("/")[0]


def _indexed_segment(route: BaseRoute) -> str | None:
    """The static first segment every path the route matches starts with; None if unknown."""
    if type(route).matches not in _PATH_MATCHERS:
        return None
    segment = first_segment(route.path)  # type: ignore[attr-defined]  # both types have one
    return None if "{" in segment else segment


class _FlaggedRoutes(list[BaseRoute]):
    """`router.routes`, flagging each change: the framework edits the list in place (append,
    extend, insert...) and nothing else would tell the index; a list, so every reader works."""

    changed = False


def _flagging(name: str) -> Any:
    method = getattr(list, name)

    def flagged(self: _FlaggedRoutes, *args: Any) -> Any:
        self.changed = True
        return method(self, *args)

    flagged.__name__ = name
    return flagged


for _name in (
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
    "append",
    "extend",
    "insert",
    "remove",
    "pop",
    "clear",
    "sort",
    "reverse",
):
    setattr(_FlaggedRoutes, _name, _flagging(_name))


class _Candidates:
    """The router as its own code sees it, with only `routes` narrowed to the candidates."""

    def __init__(self, router: Router, routes: list[BaseRoute]) -> None:
        self._router = router
        self.routes = routes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._router, name)


class RouteIndex:
    """The router's entry point (`router.middleware_stack`): picks the candidates, then routes."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._route_app: RouterApp = type(router).app
        self._routes = _FlaggedRoutes()
        self._by_segment: dict[str, _Candidates] = {}
        self._unindexed = _Candidates(router, [])
        self._build()

    def _build(self) -> None:
        routes = self.router.routes
        if not isinstance(routes, _FlaggedRoutes):
            # A list held from before this swap is no longer the router's: index_routes runs
            # as the app is built, before anyone else holds one.
            routes = self.router.routes = _FlaggedRoutes(routes)
        routes.changed = False
        for route in routes:
            use_fast_handler(route)
        segments = {_indexed_segment(route) for route in routes} - {None}
        self._by_segment = {
            segment: _Candidates(
                self.router,
                [route for route in routes if _indexed_segment(route) in (segment, None)],
            )
            for segment in segments
            if segment is not None
        }
        self._unindexed = _Candidates(
            self.router, [route for route in routes if _indexed_segment(route) is None]
        )
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self.router
        if scope["type"] != "http":
            await router.app(scope, receive, send)
            return
        routes = router.routes
        if routes is not self._routes or self._routes.changed:
            self._build()
        # A slash redirect keeps the first segment, so its target is among the same candidates.
        candidates = self._by_segment.get(first_segment(get_route_path(scope)), self._unindexed)
        if "router" not in scope:
            scope["router"] = router  # the real router, not the narrowed view
        await self._route_app(candidates, scope, receive, send)


def index_routes(router: Router) -> None:
    """Route `router`'s requests through a `RouteIndex`; a router with middleware is left as is."""
    if router.middleware_stack == router.app:
        router.middleware_stack = RouteIndex(router)
