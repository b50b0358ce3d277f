"""The db-read-batched scenario: batched item reads against bare FastAPI and the unbatched path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_loadtest import bench, counted, needs_load_tools, refused, result, write_project

from generator.harness import apps
from generator.harness.load.batched import UNBATCHED, BatchedRead, unbatched_figures
from generator.harness.load.runner import scenario_report
from generator.harness.load.scenario import Outcome, Side
from generator.harness.load.scenarios import SCENARIOS

SCENARIO = SCENARIOS["db-read-batched"]


def test_it_loads_db_reads_path_against_the_asyncpg_baseline_batching_on_and_off() -> None:
    assert isinstance(SCENARIO, BatchedRead)
    assert SCENARIO.path == SCENARIOS["db-read"].path
    assert SCENARIO.baseline_app == apps.BASELINE_DB
    assert SCENARIO.features == ("postgres",)
    # Both service sides read PostgreSQL: the item cache off, batching on one side only.
    batched, unbatched = dict(SCENARIO.service_settings), dict(SCENARIO.unbatched_settings)
    assert batched == {"CACHE_ITEMS_TTL_S": "0", "DB_BATCH_READS": "true"}
    assert unbatched == {"CACHE_ITEMS_TTL_S": "0", "DB_BATCH_READS": "false"}


@needs_load_tools
def test_a_project_without_postgres_cannot_run_it(tmp_path: Path) -> None:
    code, printed = refused(write_project(tmp_path, features=["cache"]), [SCENARIO.name])
    assert code == 2
    assert f"scenario {SCENARIO.name} needs the postgres feature" in printed


def entry(
    bare: list[float], batched: list[tuple[float, float]], unbatched: list[float]
) -> dict[str, Any]:
    """The JSON entry of an outcome: rps of each side per run, p99 of the batched runs given,
    every unbatched run's p99 10 ms."""
    sides = (
        Side(tuple(result(rps, 10.0) for rps in bare)),
        Side(tuple(result(rps, p99) for rps, p99 in batched)),
        Side(tuple(result(rps, 10.0) for rps in unbatched)),
    )
    outcome = Outcome(SCENARIO, sides[0], sides[1], unbatched_figures(*sides))
    return scenario_report(outcome)


def test_the_target_is_met_at_one_and_a_half_bare_without_a_higher_p99() -> None:
    met = entry([100, 100, 100], [(160, 9.0), (150, 8.0), (170, 11.0)], [90, 80, 100])
    assert met["ratio"] == 1.6
    assert met["rps_over_unbatched"] == {"median": 1.7778, "min": 1.7, "max": 1.875}
    assert met["p99_over_unbatched"]["median"] == 0.9
    assert met["unbatched_over_bare"]["median"] == 0.9
    assert SCENARIO.verdict(met).met is True
    slow_tail = entry([100, 100, 100], [(160, 12.0), (150, 11.0), (170, 9.0)], [90, 80, 100])
    assert SCENARIO.verdict(slow_tail).met is False
    short = entry([100, 100, 100], [(140, 9.0), (140, 9.0), (140, 9.0)], [90, 80, 100])
    assert SCENARIO.verdict(short).met is False


def test_its_table_shows_the_three_sides() -> None:
    rows = SCENARIO.tables(entry([100] * 3, [(160, 9.0)] * 3, [90] * 3))
    (table,) = rows.values()
    assert [row["side"] for row in table] == [
        "bare FastAPI + asyncpg",
        "service, batched",
        "service, unbatched",
    ]
    assert [row["rps"] for row in table] == ["100", "160", "90"]
    assert [row["p99 ms"] for row in table] == ["10.00", "9.00", "10.00"]


def test_refusals_on_the_unbatched_side_fail_the_scenario(tmp_path: Path) -> None:
    clean = Side((counted({200: 10_000}),) * 3)
    refusing = Side((counted({200: 9_000, 503: 1_000}),) * 3)
    outcome = Outcome(SCENARIO, clean, clean, unbatched_figures(clean, clean, refusing))
    failure = SCENARIO.failure(outcome, bench(write_project(tmp_path, features=["postgres"])))
    assert failure == (
        f"{UNBATCHED}: 10.0% of answers were not 200 (3,000 x 503); 503s: the service shed "
        "load or a dependency is down (see /health/detailed)"
    )
