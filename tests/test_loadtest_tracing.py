"""The tracing scenario: who can run it, what each side runs, the receiver, its rows, target
and table."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
from rich.progress import Progress
from test_loadtest import counted, quiet_console, write_project
from test_loadtest_ablation import side

from generator.harness.load import report, runner, tracing
from generator.harness.load.scenario import Bench, Outcome, Side
from generator.harness.project import Project, ServiceError

SCENARIO = tracing.TRACING
DEFAULT, DOWN, EVERY, _ = tracing.VARIANTS
HEALTH, DB_READ = tracing.LOADS
ENDPOINT = "http://127.0.0.1:4318/v1/traces"


def test_all_runs_it_only_with_the_tracing_feature(tmp_path: Path) -> None:
    with_it = Project.load(write_project(tmp_path / "a", features=["tracing"]))
    without = Project.load(write_project(tmp_path / "b", features=["metrics", "postgres"]))
    assert "tracing" in runner.runnable_scenarios(with_it)[0]
    skipped = runner.runnable_scenarios(without)[1]
    assert "scenario tracing needs the tracing feature" in skipped["tracing"]


def test_db_read_is_loaded_only_with_postgres() -> None:
    assert tracing.plan(["tracing", "postgres"]) == [HEALTH, DB_READ]
    assert tracing.plan(["tracing"]) == [HEALTH]


def test_the_off_side_is_the_same_service_with_the_standard_switch(tmp_path: Path) -> None:
    project = Project.load(write_project(tmp_path, features=["tracing"]))
    bench = Bench(project, {"DATABASE_URL": "postgresql://db"}, 1, 1, Progress(), None, True)
    on = bench.service_env(tracing.variant_settings(DEFAULT, ENDPOINT))
    every = bench.service_env(tracing.variant_settings(EVERY, ENDPOINT))
    assert tracing.OFF_ENV == {"OTEL_SDK_DISABLED": "true"}
    assert on["DEMO_SVC_TRACING_OTLP_ENDPOINT"] == ENDPOINT
    assert on["DEMO_SVC_CACHE_ITEMS_TTL_S"] == "0"  # the item read goes to PostgreSQL
    assert on["DEMO_SVC_RATE_LIMIT_DEFAULT"] == ""
    assert on["DATABASE_URL"] == "postgresql://db"
    assert "DEMO_SVC_TRACING_SAMPLE_RATIO" not in on  # the service's own default
    assert every["DEMO_SVC_TRACING_SAMPLE_RATIO"] == "1"


def state(sampler: str = "parentbased_traceidratio 0.01", endpoint: str = ENDPOINT) -> Any:
    return {"endpoint": endpoint, "sampler": sampler, "exported": 0, "dropped": {}}


def test_sides_running_what_they_should_pass_the_check() -> None:
    assert tracing.check_sides({}, {"tracing": state()}, DEFAULT, ENDPOINT) == (
        "parentbased_traceidratio 0.01"
    )
    every = state("parentbased_traceidratio 1.0")
    assert tracing.check_sides({}, {"tracing": every}, EVERY, ENDPOINT).endswith(" 1.0")


@pytest.mark.parametrize(
    ("off", "on", "variant", "message"),
    [
        ({"tracing": state()}, {"tracing": state()}, DEFAULT, "still runs tracing"),
        ({}, {}, DEFAULT, "runs no tracing"),
        ({}, {"tracing": state(endpoint="http://elsewhere")}, DEFAULT, "exports to"),
        ({}, {"tracing": state()}, EVERY, "samples with parentbased_traceidratio 0.01"),
    ],
)
def test_a_side_running_the_wrong_thing_stops_the_scenario(
    off: Any, on: Any, variant: tracing.Variant, message: str
) -> None:
    with pytest.raises(ServiceError, match=message):
        tracing.check_sides(off, on, variant, ENDPOINT)


def test_the_receiver_accepts_and_counts_every_export() -> None:
    receiver = tracing.Receiver()
    with receiver.running():
        for body in (b"\x0a\x02ab", b"\x0a\x00"):
            request = urllib.request.Request(
                receiver.endpoint,
                data=body,
                headers={"Content-Type": "application/x-protobuf"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
                assert response.read() == b""  # an empty ExportTraceServiceResponse
    assert receiver.counts() == (2, 6)


def row(variant: tracing.Variant, load: tracing.Load, off: Side, on: Side) -> dict[str, Any]:
    counts = {"spans_exported": 7, "spans_dropped_queue_full": 0, "spans_dropped_export_failed": 2}
    return tracing.row_for(variant, load, "sampler", off, on) | counts


def test_a_row_is_tracing_on_over_off_pair_by_pair() -> None:
    found = row(DEFAULT, HEALTH, side(1000, 500), side(960, 520))
    assert found["rps_on_over_off"] == {"median": 0.96, "min": 0.96, "max": 0.96}
    assert found["cpu_off_over_on"]["median"] == pytest.approx(500 / 520, abs=1e-4)
    assert (found["cpu_us_on"], found["cpu_us_off"]) == (520, 500)
    assert found["judged"]
    assert "failed" not in found


def entry(on_health: Side, on_db: Side, on_every: Side) -> dict[str, Any]:
    off = side(1000, 500)
    rows = [
        row(DEFAULT, HEALTH, off, on_health),
        row(DEFAULT, DB_READ, off, on_db),
        row(EVERY, DB_READ, off, on_every),
    ]
    extra = {"baseline": tracing.BASELINE, "tracing": rows}
    return runner.scenario_report(Outcome(SCENARIO, off, on_health, extra=extra))


def test_the_target_is_both_loads_at_default_sampling_and_100_percent_is_report_only() -> None:
    good, slow = side(980, 505), side(900, 560)
    verdict = report.verdict(entry(good, good, slow))
    assert verdict.met is True
    assert "0.95" in verdict.target
    assert "100 % report only" in verdict.target
    assert report.verdict(entry(good, slow, good)).met is False
    # rps within the target but each request costing more CPU: missed as well.
    assert report.verdict(entry(good, side(1000, 560), good)).met is False


def test_a_row_with_refusals_fails_the_scenario_and_shows_no_figure(tmp_path: Path) -> None:
    clean, refused = side(1000, 500), Side((counted({200: 980, 500: 20}),) * 3, (0.5,) * 3)
    good, bad = row(DEFAULT, HEALTH, clean, clean), row(DOWN, DB_READ, clean, refused)
    (tmp_path / ".copier-answers.yml").write_text("package_name: demo_svc\n")
    bench = Bench(Project.load(tmp_path), {}, 1, 1, Progress(console=quiet_console()[0]))
    outcome = Outcome(SCENARIO, clean, clean, extra={"tracing": [good, bad]})
    assert SCENARIO.failure(outcome, bench) == (
        "collector-down db-read: the tracing-on side had 2.0% unexpected answers"
    )
    first, second = tracing.table_rows([good, bad])
    assert first["rps on / off"] == "1.000 (1.000-1.000)"
    assert first["tracing"] == "default (judged)"
    assert first["dropped"] == "2"
    assert second["rps on / off"] == second["CPU off / on"] == "failed"


def test_the_report_page_names_the_off_side_and_shows_the_rows() -> None:
    page = report.page({"scenarios": [entry(side(980, 505), side(950, 520), side(500, 1000))]}, b"")
    assert "vs service, OTEL_SDK_DISABLED=true" in page
    assert "<h2>tracing: tracing on / tracing off, both loaded at once</h2>" in page
    assert "<td>100%</td><td>db-read</td><td>0.500 (0.500-0.500)</td>" in page


def test_the_terminal_shows_each_row() -> None:
    console, out = quiet_console()
    tables = SCENARIO.tables(entry(side(980, 505), side(950, 520), side(500, 1000)))
    (title, rows), *_ = tables.items()
    console.print(runner.own_table(title, rows))
    printed = out.getvalue()
    assert "tracing on / tracing off, both loaded at once" in printed
    line = next(line for line in printed.splitlines() if line.startswith("│ 100%"))
    assert "0.500 (0.500-0.500)" in line
