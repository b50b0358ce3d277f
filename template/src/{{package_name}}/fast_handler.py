"""A lean request handler for the common route: path and query parameters in, JSON out.

FastAPI's handler for a route does the same generic work for every request: two exit stacks,
a dependency loop, header, cookie and body parameters, telemetry hooks, the endpoint's source
location for error messages, a sub-response's status and headers to merge. A route taking only
path and query parameters, with no dependencies and no streaming, uses none of it, and FastAPI
also works out each parameter's keys and kind again on every request. The route index gives
such a route this handler instead: the whole routed request went from ~580,000 to ~280,000
instructions (counted in process). It keeps FastAPI's own pieces for what the client sees:
parameters read as FastAPI reads them and validated by their FastAPI fields, the response
validated and serialised by the route's response field, the route's response class and status
code. Anything off the happy path is FastAPI's:
- a request whose parameters fail validation is handed to FastAPI's handler (no endpoint has
  run yet), which answers it as it would have;
- an exception from the endpoint or the response goes through Starlette's exception-handling
  wrapper, as under FastAPI's handler, so the app's exception handlers answer it;
- a `Response` the endpoint returns is sent through that same wrapper.
FastAPI's telemetry is off in this service (the gate observes requests), so it has no hooks
to call. A route keeps FastAPI's handler when it is anything else, or made with
`GenericHandlerRoute`. The pieces reused are FastAPI's internal helpers, so an upgrade can
change them: tests/test_fast_handler.py compares the answers with FastAPI's own handler's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, cast

from fastapi._compat import ModelField, Undefined, field_annotation_is_sequence
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import (
    _is_async_gen_callable,
    _is_coroutine_callable,
    _is_gen_callable,
)
from fastapi.dependencies.utils import (
    _get_param_aliases,
    _get_param_model,
    _is_json_field,
    _validate_value_with_model_field,
)
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import EndpointContext, ResponseValidationError
from fastapi.routing import APIRoute, _extract_endpoint_context, request_response
from fastapi.sse import EventSourceResponse
from fastapi.utils import is_body_allowed_for_status_code
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api.validation import JsonBodyRoute

_RESPONSE_LOC = ("response",)
# How FastAPI builds a route's handler; a subclass with its own (JsonBodyRoute changes only
# how a body is read, and these routes have none) changes what a request does: left alone.
_FRAMEWORK_HANDLERS = (APIRoute.get_route_handler, JsonBodyRoute.get_route_handler)
# The code of the ASGI app FastAPI's `request_response` makes: a route whose `app` runs
# anything else (a body limit, a wrapper of the owner's) keeps it.
_FRAMEWORK_APP_CODE = request_response(lambda request: Response()).__code__


class GenericHandlerRoute(APIRoute):
    """A route that keeps FastAPI's generic handler, for an owner who needs it on a route the
    fast one would take: `APIRouter(route_class=GenericHandlerRoute)`."""


def _eligible(route: APIRoute) -> bool:
    """Whether the route's requests need none of FastAPI's generic per-request work."""
    dependant = route.dependant
    call = dependant.call
    response_class = route.response_class
    if isinstance(response_class, DefaultPlaceholder):
        response_class = response_class.value
    return (
        not isinstance(route, GenericHandlerRoute)
        and type(route).get_route_handler in _FRAMEWORK_HANDLERS
        and getattr(route.app, "__code__", None) is _FRAMEWORK_APP_CODE
        and call is not None
        and not (
            dependant.dependencies
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
            or dependant.request_param_name
            or dependant.websocket_param_name
            or dependant.http_connection_param_name
            or dependant.response_param_name
            or dependant.background_tasks_param_name
            or dependant.security_scopes_param_name
        )
        and route.body_field is None
        # A parameter model (a model read from the query) is read its own way: left to FastAPI.
        and all(
            _get_param_model(field) is None
            for field in (*dependant.path_params, *dependant.query_params)
        )
        and route.stream_item_field is None
        and not (route.is_sse_stream or route.is_json_stream)
        and not (_is_gen_callable(call) or _is_async_gen_callable(call))
        and not (
            isinstance(response_class, type) and issubclass(response_class, EventSourceResponse)
        )
    )


def use_fast_handler(route: BaseRoute) -> None:
    """Give `route` the fast handler if it is eligible (and does not have it yet)."""
    if isinstance(route, APIRoute) and not isinstance(route.app, FastHandler) and _eligible(route):
        route.app = FastHandler(route)


async def _discard(message: Message) -> None:
    """The `send` of a response that has already started: nothing more goes out."""


class _Param:
    """A path or query parameter as FastAPI's `request_params_to_args` reads it, with what that
    function works out on every request (its keys, whether it takes a list) worked out once."""

    __slots__ = ("field", "keys", "location", "multi", "name", "sequence")

    def __init__(self, field: ModelField) -> None:
        self.field = field
        self.name = field.name
        self.keys = [key for _, key in _get_param_aliases(field)]
        self.location = field.field_info.in_.value  # type: ignore[attr-defined]  # a Param's
        self.sequence = field_annotation_is_sequence(field.field_info.annotation)
        self.multi = self.sequence and not _is_json_field(field)

    def read(self, received: Mapping[str, Any]) -> tuple[Any, list[Any]]:
        """The parameter's validated value and FastAPI's errors for it, from `received`."""
        keys = self.keys
        key = keys[0]
        if len(keys) > 1:
            key = next((choice for choice in keys if choice in received), key)
        value: Any
        if self.multi and isinstance(received, QueryParams):
            value = received.getlist(key)
        else:
            value = received.get(key)
        if value is None or (self.sequence and len(value) == 0):
            value = Undefined  # the default, applied in validation as FastAPI does
        return _validate_value_with_model_field(
            field=self.field, value=value, values={}, loc=(self.location, key)
        )


class FastHandler:
    """An eligible route's ASGI app (`route.app`), in place of FastAPI's `request_response`."""

    def __init__(self, route: APIRoute) -> None:
        dependant = route.dependant
        call = cast(Callable[..., Any], dependant.call)  # _eligible checked it is there
        self.framework_app: ASGIApp = route.app  # answers what the fast path does not
        self._call = call
        self._path = dependant.path
        self._path_params = [_Param(field) for field in dependant.path_params]
        self._query_params = [_Param(field) for field in dependant.query_params]
        self._is_coroutine = _is_coroutine_callable(call)
        self._field = route.response_field
        response_args: dict[str, Any] = (
            {"status_code": route.status_code} if route.status_code else {}
        )
        # FastAPI's shortcut: with a response field and the default class, JSON bytes straight
        # from the field's serialiser.
        dump_json = self._field is not None and isinstance(route.response_class, DefaultPlaceholder)
        self._respond: Callable[[Any], Response]
        if dump_json:
            self._respond = functools.partial(
                Response, media_type="application/json", **response_args
            )
        else:
            response_class = route.response_class
            if isinstance(response_class, DefaultPlaceholder):
                response_class = response_class.value
            self._respond = functools.partial(response_class, **response_args)
        self._serialize: Callable[..., Any] = jsonable_encoder
        if self._field is not None:
            self._serialize = functools.partial(
                self._field.serialize_json if dump_json else self._field.serialize,
                include=route.response_model_include,
                exclude=route.response_model_exclude,
                by_alias=route.response_model_by_alias,
                exclude_unset=route.response_model_exclude_unset,
                exclude_defaults=route.response_model_exclude_defaults,
                exclude_none=route.response_model_exclude_none,
            )

    def _values(self, scope: Scope) -> dict[str, Any] | None:
        """The endpoint's arguments; None if any fails validation (FastAPI answers that)."""
        values: dict[str, Any] = {}
        received: Mapping[str, Any] = scope.get("path_params", {})
        for param in self._path_params:
            value, errors = param.read(received)
            if errors:
                return None
            values[param.name] = value
        if self._query_params:
            query_values = {}
            received = QueryParams(scope["query_string"])
            for param in self._query_params:
                value, errors = param.read(received)
                if errors:
                    return None
                query_values[param.name] = value
            values.update(query_values)  # a query parameter's name may be a path one's too
        return values

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        values = self._values(scope)
        if values is None:
            await self.framework_app(scope, receive, send)
            return
        try:
            if self._is_coroutine:
                content = await self._call(**values)
            else:
                # A partial: an endpoint's parameter may be called `func`, as the pool's own.
                content = await run_in_threadpool(functools.partial(self._call, **values))
            if isinstance(content, Response):
                request = Request(scope, receive, send)
                await wrap_app_handling_exceptions(content, request)(scope, receive, send)
                return
            field = self._field
            if field is not None:
                # As FastAPI's `serialize_response`: validated in the thread pool for a sync
                # endpoint.
                if self._is_coroutine:
                    value, errors = field.validate(content, {}, loc=_RESPONSE_LOC)
                else:
                    value, errors = await run_in_threadpool(
                        field.validate, content, {}, loc=_RESPONSE_LOC
                    )
                if errors:
                    raise ResponseValidationError(
                        errors=errors, body=content, endpoint_ctx=self._endpoint_context(scope)
                    )
                content = value
            response = self._respond(self._serialize(content))
            if not is_body_allowed_for_status_code(response.status_code):
                response.body = b""
        except Exception as exc:  # noqa: BLE001 - answered as FastAPI's handler would
            await self._handle(exc, scope, receive, send, started=False)
            return
        try:
            await response(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - answered as FastAPI's handler would
            await self._handle(exc, scope, receive, send, started=True)

    def _endpoint_context(self, scope: Scope) -> EndpointContext:
        """Where the endpoint is, for the error message, as FastAPI's handler puts it."""
        context = _extract_endpoint_context(self._call)
        if self._path:
            mount_path = scope.get("root_path", "").rstrip("/")
            context["path"] = f"{scope['method']} {mount_path}{self._path}"
        return context

    @staticmethod
    async def _handle(
        exc: Exception, scope: Scope, receive: Receive, send: Send, *, started: bool
    ) -> None:
        """Answer `exc` as Starlette's wrapper around FastAPI's handler would: the app's handler
        for it, or raised on; after the response started, a handled one is a RuntimeError."""

        async def raising(scope: Scope, receive: Receive, send: Send) -> None:
            if started:
                await send({"type": "http.response.start"})  # only marks it started
            raise exc

        request = Request(scope, receive, send)
        await wrap_app_handling_exceptions(raising, request)(
            scope, receive, _discard if started else send
        )
