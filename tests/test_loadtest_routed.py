"""The routed scenarios: the same route table on every side, the padding, the peer stacks."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from generator.harness.apps import routed
from generator.harness.load import routed as routed_scenarios
from generator.harness.load.scenarios import SCENARIOS


def generated_like() -> FastAPI:
    """Routes shaped like a generated service's: docs, probes, a resource, two methods on one
    path; added after the docs, as create_app does."""
    app = FastAPI()
    for path, methods in (
        ("/health", ["GET"]),
        ("/items", ["POST"]),
        ("/items/{item_id}", ["GET"]),
        ("/items/{item_id}", ["PUT"]),
        ("/items", ["GET"]),
        ("/metrics", ["GET"]),
    ):
        app.add_api_route(path, routed.trivial, methods=methods)
    return app


def test_the_bare_side_has_the_services_table_in_order() -> None:
    service = generated_like()
    routed.add_bench_routes(service)
    table = routed.table(service)
    assert table[0] == {"path": "/openapi.json", "methods": ["GET", "HEAD"]}
    assert table[-1] == {"path": routed.MEASURED_PATH, "methods": ["GET"]}
    assert routed.table(routed.mirror(table)) == table


def test_the_table_survives_the_environment_the_apps_read_it_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = generated_like()
    routed.add_bench_routes(service, 20)
    monkeypatch.setenv("BULWARK_ROUTE_TABLE", json.dumps(routed.table(service)))
    assert routed.table(routed.bare()) == routed.table(service)


def test_padding_comes_before_the_measured_route_up_to_the_total() -> None:
    service = generated_like()
    own = routed.table(service)
    routed.add_bench_routes(service, 50)
    table = routed.table(service)
    assert len(table) == 50
    assert table[: len(own)] == own
    padding = table[len(own) : -1]
    assert len({route["path"] for route in padding}) == len(padding) == 50 - len(own) - 1
    assert all(route["path"].startswith("/resource-") for route in padding)
    assert table[-1]["path"] == routed.MEASURED_PATH


def test_a_total_below_the_apps_own_routes_is_refused() -> None:
    service = generated_like()
    with pytest.raises(ValueError, match="has 10 routes already; 5 asked for"):
        routed.add_bench_routes(service, 5)


@pytest.mark.parametrize("stack", ["bare", "naive", "loopguard"])
def test_every_stack_answers_the_measured_route_alike(
    stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = generated_like()
    routed.add_bench_routes(service)
    table = routed.table(service)
    monkeypatch.setenv("BULWARK_ROUTE_TABLE", json.dumps(table))
    app = routed.STACKS[stack]()
    assert routed.table(app) == table
    with TestClient(app) as client:
        answer = client.get("/bench/items/7?q=widget")
        assert answer.status_code == 200
        assert answer.json() == {"id": 7, "name": "item 7", "q": "widget"}
        assert client.get("/bench/items/seven").status_code == 422


def test_the_naive_stack_has_its_documented_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULWARK_ROUTE_TABLE", json.dumps([]))
    app = routed.naive()
    names = [middleware.cls.__name__ for middleware in app.user_middleware]  # type: ignore[attr-defined]
    assert names == ["PrometheusInstrumentatorMiddleware", "TimingMiddleware", "TimeoutMiddleware"]
    assert app.state.limiter is not None


def test_a_peer_stack_without_its_library_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(routed_scenarios.PEER_MODULES, "naive", ("no_such_module_anywhere",))
    assert routed_scenarios.peer_path("naive") is None
    assert routed_scenarios.peer_path("bare") == ""
    reason = SCENARIOS["routed-naive"].unavailable(None)  # type: ignore[arg-type]
    assert reason is not None
    assert "needs no_such_module_anywhere in Bulwark's environment" in reason


def test_the_peer_libraries_are_found_where_they_are_installed() -> None:
    import slowapi

    path = routed_scenarios.peer_path("naive")
    assert path is not None
    assert slowapi.__file__ is not None
    assert slowapi.__file__.startswith(path)
