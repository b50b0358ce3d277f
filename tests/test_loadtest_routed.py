"""The routed scenarios: the same route table on every side, the padding, the peer stacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_loadtest import HAVE_LOAD_TOOLS, quiet_console

from generator.harness.apps import routed
from generator.harness.load import report
from generator.harness.load import routed as routed_scenarios
from generator.harness.load.runner import run_loadtest
from generator.harness.load.scenarios import SCENARIOS
from generator.harness.project import Project


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


@pytest.mark.parametrize(
    ("ratio", "cpu", "p99", "met"),
    [
        (0.92, 0.96, 1.1, True),
        (0.92, 0.90, 1.1, False),
        (0.92, 0.96, 1.3, False),
        (0.80, 1.00, 1.0, False),
    ],
)
def test_routed_is_judged_on_rps_cpu_and_p99_together(
    ratio: float, cpu: float, p99: float, met: bool
) -> None:
    entry = {"ratio": ratio, "pairs": {"cpu": {"median": cpu}, "p99": {"median": p99}}}
    judged = SCENARIOS["routed"].verdict(entry)
    assert judged.met is met
    assert judged.target == "rps ratio ≥ 0.9; pair medians: CPU ≥ 0.95, p99 ≤ 1.2"
    assert SCENARIOS["routed-50"].verdict(entry).met is (ratio >= 1.2)


def test_the_report_names_a_peer_baseline_under_its_scenario() -> None:
    entry = {
        "name": "routed-naive",
        "rps": 700.0,
        "baseline_rps": 100.0,
        "ratio": 7.0,
        "p50_ms": 1.0,
        "baseline_p50_ms": 9.0,
        "p99_ms": 2.0,
        "baseline_p99_ms": 30.0,
        "errors": 0,
        "baseline": routed_scenarios.STACK_LABELS["naive"],
    }
    page = report.page({"scenarios": [entry]}, b"png")
    assert "<td>routed-naive<br><small>vs naive stack: bare + 2 BaseHTTPMiddleware" in page
    assert "<td>rps ratio ≥ 5</td><td class='met'>met</td>" in page


@pytest.fixture
def full_sample(full_sample: Path) -> Path:
    """The session's `full` sample (tests/conftest.py), where the load tools are."""
    if not HAVE_LOAD_TOOLS:
        pytest.skip("needs wrk, taskset and uv")
    return full_sample


@pytest.mark.slow
@pytest.mark.load
def test_routed_on_the_full_preset_serves_only_200s_on_both_sides(
    full_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One 1 s pair: the pipeline on the real template, not a figure."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    console, out = quiet_console()
    json_path = tmp_path / "routed.json"
    code = run_loadtest(
        full_sample,
        ["routed"],
        duration=1,
        connections=16,
        json_path=json_path,
        min_ratio=None,
        console=console,
        repeat=1,
    )
    printed = out.getvalue()
    print(printed)
    assert code == 0, printed
    (entry,) = json.loads(json_path.read_text())["scenarios"]
    assert entry["path"] == "/bench/items/7?q=widget"
    assert list(entry["statuses"]) == list(entry["baseline_statuses"]) == ["200"]
    assert entry["cpu_us_per_request"] > 0
    assert entry["baseline_cpu_us_per_request"] > 0
    project = Project.load(full_sample)
    env = routed_scenarios.service_env(project, 0) | {"DATABASE_URL": "postgresql://u@h/db"}
    table = routed_scenarios.route_table(project, env)
    paths = [route["path"] for route in table]
    assert {"/health", "/items/{item_id}", "/payments/{payment_id}", "/metrics"} <= set(paths)
    assert paths[-1] == routed.MEASURED_PATH
