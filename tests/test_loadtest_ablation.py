"""The ablation scenario: which variants a project gets, the renders without a feature, each
protection's marginal cost, and how the table reads in the terminal and on the report page."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rich.progress import Progress
from test_loadtest import REPO_ROOT, counted, quiet_console

from generator.harness.load import ablation, report, runner
from generator.harness.load.scenario import Bench, Outcome, Side
from generator.harness.project import Project


def test_a_project_is_measured_without_each_of_its_per_request_features() -> None:
    planned = ablation.plan(["postgres", "cache", "rate_limit", "timeout", "metrics"])
    assert [v.name for v in planned] == [
        "everything",
        "rate_limit",
        "timeout",
        "metrics",
        "access_log",
    ]
    assert [v.feature for v in planned if v.render] == ["timeout", "metrics"]
    assert planned[0].bare


def test_a_project_without_protections_still_gets_bare_and_the_access_log() -> None:
    assert [v.name for v in ablation.plan([])] == ["everything", "access_log"]


@pytest.mark.slow
def test_a_render_without_a_feature_keeps_every_other_answer(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    answers = {
        "_src_path": str(REPO_ROOT),
        "_commit": "HEAD",
        "project_slug": "abl-svc",
        "package_name": "abl_svc",
        "features": ["timeout", "metrics"],
        "targets": ["docker"],
    }
    (root / ".copier-answers.yml").write_text(yaml.safe_dump(answers))
    src = ablation.render(Project.load(root), tmp_path / "without", "timeout")
    rendered = yaml.safe_load((tmp_path / "without" / ".copier-answers.yml").read_text())
    assert rendered["features"] == ["metrics"]
    assert rendered["targets"] == []
    assert src == tmp_path / "without" / "src"
    assert (src / "abl_svc" / "observability" / "metrics").is_dir()
    assert not (src / "abl_svc" / "resilience").exists()  # timeout was its only part


def side(rps: float, cpu_us: float, runs: int = 3) -> Side:
    """`runs` 1 s runs of `rps` answers, each costing `cpu_us` of server CPU per answer."""
    run = counted({200: int(rps)})
    return Side((run,) * runs, (rps * cpu_us / 1e6,) * runs)


def test_a_protections_cost_is_the_full_stack_less_the_variant_pair_by_pair() -> None:
    variant = ablation.VARIANTS[1]
    row = ablation.entry_for(variant, side(1000, 500), side(1250, 400))
    assert row["off"] == "rate_limit"
    assert row["cpu_us_full"] == 500
    assert row["cpu_us_off"] == 400
    assert row["marginal_cpu_us"] == {"median": 100, "min": 100, "max": 100}
    assert row["rps_off_over_full"]["median"] == 1.25


def bench(tmp_path: Path) -> Bench:
    (tmp_path / ".copier-answers.yml").write_text("package_name: demo_svc\n")
    console, _ = quiet_console()
    return Bench(Project.load(tmp_path), {}, 1, 1, Progress(console=console))


def test_a_variant_with_refusals_fails_the_scenario_and_shows_no_figure(tmp_path: Path) -> None:
    clean, refused = side(1000, 500), Side((counted({200: 980, 429: 20}),) * 3, (0.5,) * 3)
    loop_monitor = next(v for v in ablation.VARIANTS if v.name == "loop_monitor")
    good = ablation.entry_for(ablation.VARIANTS[0], clean, clean)
    bad = ablation.entry_for(loop_monitor, clean, refused)
    outcome = Outcome(ablation.ABLATION, clean, clean, extra={"ablation": [good, bad]})
    failure = ablation.ABLATION.failure(outcome, bench(tmp_path))
    assert failure == "loop_monitor off: the off side had 2.0% unexpected answers"
    first, second = ablation.table_rows([good, bad])
    assert first["CPU µs/req saved"] == "0 (0-0)"
    assert second["CPU µs/req saved"] == second["rps off / full"] == "failed"
    ok = Outcome(ablation.ABLATION, clean, clean, extra={"ablation": [good]})
    assert ablation.ABLATION.failure(ok, bench(tmp_path)) is None


def ablation_entry() -> dict[str, object]:
    full, off = side(1000, 500), side(1250, 400)
    rows = [ablation.entry_for(variant, full, off) for variant in ablation.VARIANTS[:2]]
    outcome = Outcome(ablation.ABLATION, off, full, extra={"ablation": rows})
    return runner.scenario_report(outcome)


def test_the_terminal_shows_the_cost_of_each_protection() -> None:
    console, out = quiet_console()
    (title, rows), *_ = ablation.ABLATION.tables(ablation_entry()).items()
    console.print(runner.own_table(title, rows))
    printed = out.getvalue()
    assert "what each protection costs a routed request" in printed
    line = next(line for line in printed.splitlines() if "rate_limit" in line)
    assert "100 (100-100)" in line
    assert "1.25 (1.25-1.25)" in line


def test_the_report_page_has_the_ablation_table_and_cpu_per_request() -> None:
    document = {"scenarios": [ablation_entry()]}
    page = report.page(document, b"png")
    assert "<h2>ablation: what each protection costs a routed request</h2>" in page
    assert "<td>rate_limit</td><td>100 (100-100)</td><td>1.25 (1.25-1.25)</td>" in page
    assert "<th>CPU µs/req</th>" in page
    assert "<td>500</td><td>400</td>" in page  # service then baseline CPU per request
