"""The load-test report (`bulwark loadtest --all --report DIR`): plot, page, skipping."""

from __future__ import annotations

import base64
import html
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from test_loadtest import (
    HAVE_LOAD_TOOLS,
    REPO_ROOT,
    needs_load_tools,
    quiet_console,
    result,
    write_project,
)

from generator.harness import nginx
from generator.harness.load import container, report, runner
from generator.harness.load.runner import run_loadtest
from generator.harness.load.scenario import Outcome, Scenario, Side, Verdict
from generator.harness.load.scenarios import SCENARIOS
from generator.harness.project import Project

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The routed scenarios and the ablation need no feature: every project runs them.
ROUTED_NAMES = ["routed", "routed-50", "routed-naive", "routed-loopguard", "ablation"]


def entry(name: str, rps: float, baseline_rps: float, **extra: Any) -> dict[str, Any]:
    """One scenario entry shaped like runner.scenario_report's."""
    return {
        "name": name,
        "rps": rps,
        "p50_ms": 1.5,
        "p99_ms": 4.25,
        "errors": 0,
        "baseline_rps": baseline_rps,
        "baseline_p99_ms": 3.5,
        "ratio": round(rps / baseline_rps, 4),
        "baseline_p50_ms": 1.25,
        "baseline_errors": 0,
        **extra,
    }


def interval(t_s: float, *, shed_p99: float | None, admitted_p99: float) -> dict[str, Any]:
    return {
        "t_s": t_s,
        "shed": 0 if shed_p99 is None else 400,
        "admitted": 80,
        "other": 0,
        "shed_p50_ms": None if shed_p99 is None else shed_p99 / 2,
        "shed_p99_ms": shed_p99,
        "admitted_p50_ms": admitted_p99 / 2,
        "admitted_p99_ms": admitted_p99,
    }


def fixture_report() -> dict[str, Any]:
    overload = {
        "shed_p99_ms": 1.2,
        "admitted_p99_ms": 90.0,
        "unloaded_p99_ms": 55.0,
        "non_503_errors": 0,
        "offered_over_capacity": 6.1,
        "interval_s": 0.5,
        "series": [interval(i / 2, shed_p99=1.0 + i / 10, admitted_p99=80.0) for i in range(6)],
        "baseline_series": [
            interval(i / 2, shed_p99=None, admitted_p99=300.0 * i) for i in range(6)
        ],
    }
    return {
        "machine": {"cpu_model": "Test CPU 3000", "cores": 2, "date": "2026-11-26T20:00:00+00:00"},
        "protocol": {"warmup_s": 3, "runs": 3, "duration_s": 10, "connections": 64},
        "scenarios": [
            entry("health", 9200, 10000),  # 0.92: met
            entry("direct", 15000, 16000),
            entry("nginx", 7000, 8000),
            entry("db-read", 4000, 5000),  # 0.80: missed
            entry("cached-read", 8000, 5000),  # 1.60: met
            entry("overload", 1000, 160, **overload),
        ],
        "command": "bulwark loadtest build/bench --all --report build/bench-report",
    }


def test_targets_are_judged_from_the_figures() -> None:
    by_name = {e["name"]: report.verdict(e) for e in fixture_report()["scenarios"]}
    assert by_name["health"].met is True
    assert by_name["db-read"].met is False
    assert by_name["cached-read"].met is True
    assert by_name["direct"] == by_name["nginx"] == Verdict("report only", None)
    assert by_name["overload"].met is True
    slow_shed = entry("overload", 1000, 160, shed_p99_ms=2.5, admitted_p99_ms=9, unloaded_p99_ms=9)
    assert report.verdict(slow_shed).met is False
    late_admitted = {**slow_shed, "shed_p99_ms": 1.0, "admitted_p99_ms": 19.0}
    assert report.verdict(late_admitted).met is False
    # -1 is the script's "no such answer": a run that shed nothing proves nothing.
    assert report.verdict({**late_admitted, "admitted_p99_ms": 9, "shed_p99_ms": -1}).met is False


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_report_writes_json_png_and_a_page_with_every_row(tmp_path: Path) -> None:
    document = fixture_report()
    paths = report.write_report(document, tmp_path / "out")
    assert [p.name for p in paths] == ["report.json", "report.png", "index.html"]
    assert json.loads(paths[0].read_text()) == document

    png = paths[1].read_bytes()
    width, height = png_size(png)
    assert 600 <= width <= 2000
    assert 400 <= height <= 1600
    assert 20_000 < len(png) < 1_000_000

    page = paths[2].read_text()
    rows = page.split("<tr>")[2:]
    assert [row.split("</td>")[0].removeprefix("<td>") for row in rows] == [
        "health",
        "direct",
        "nginx",
        "db-read",
        "cached-read",
        "overload",
    ]
    for row, ratio, result_ in zip(
        rows,
        ["0.92", "0.94", "0.88", "0.80", "1.60", "6.25"],
        ["met", "-", "-", "missed", "met", "met"],
        strict=True,
    ):
        assert f"<td>{ratio}</td>" in row
        assert f">{result_}</td>" in row
    assert html.escape(document["command"]) in page
    assert "Test CPU 3000" in page
    assert "<dt>connections</dt><dd>64</dd>" in page
    assert "<h2>overload figures</h2>" in page
    assert "<dt>shed_p99_ms</dt><dd>1.2</dd>" in page
    assert "<dt>series</dt>" not in page  # the series are drawn, not listed
    # The plot is inline, byte for byte: the page is one self-contained file.
    assert base64.b64encode(png).decode() in page


def test_a_report_without_overload_says_why(tmp_path: Path) -> None:
    document = fixture_report()
    document["scenarios"] = document["scenarios"][:2]
    document["skipped"] = [{"name": "overload", "reason": "needs the load_shedding feature"}]
    _, png_path, page_path = report.write_report(document, tmp_path)
    png_size(png_path.read_bytes())
    page = page_path.read_text()
    assert "<li><b>overload</b>: needs the load_shedding feature</li>" in page
    assert "overload figures" not in page


def test_a_failed_scenario_shows_its_reason_and_no_ratio(tmp_path: Path) -> None:
    document = fixture_report()
    reason = "service: 97.2% of answers were not 200 (39,403 x 429); 429s: the default limit"
    document["scenarios"][3] = {**entry("db-read", 13, 290), "ratio": None, "failed": reason}
    assert report.verdict(document["scenarios"][3]) == Verdict(f"failed: {reason}", False)
    _, png_path, page_path = report.write_report(document, tmp_path)
    png_size(png_path.read_bytes())
    row = next(r for r in page_path.read_text().split("<tr>") if r.startswith("<td>db-read"))
    assert "<td>failed</td>" in row
    assert html.escape(reason) in row
    assert ">missed</td>" in row


# --- --all: what runs and what is skipped ----------------------------------------------------


def test_all_keeps_what_the_features_allow_and_says_why_for_the_rest(tmp_path: Path) -> None:
    project = Project.load(write_project(tmp_path, features=["postgres"]))
    runnable, skipped = runner.runnable_scenarios(project)
    assert runnable == [*ROUTED_NAMES, "health", "direct", "db-read", "db-read-batched"]
    assert set(skipped) == {
        "nginx", "cached-read", "overload", "loop-monitor", "tracing", "container-health",
        "container-db-read",
    }  # fmt: skip
    assert "needs the cache feature" in skipped["cached-read"]
    assert "without the docker target" in skipped["container-health"]
    assert "needs the load_shedding feature" in skipped["overload"]
    assert "--target nginx" in skipped["nginx"] or "install it" in skipped["nginx"]


def test_all_runs_nginx_when_the_site_is_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_project(
        tmp_path, features=["postgres", "cache", "load_shedding", "loop_monitor", "tracing"]
    )
    (root / "deploy" / "nginx").mkdir(parents=True)
    (root / "deploy" / "nginx" / "demo-svc.conf").write_text("server { listen 80; }\n")
    (root / "deploy" / "docker").mkdir()
    (root / "deploy" / "docker" / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setattr(nginx, "binary", lambda: "/usr/sbin/nginx")
    monkeypatch.setattr(container, "Podman", lambda: None)  # podman present or not
    runnable, skipped = runner.runnable_scenarios(Project.load(root))
    assert runnable == list(SCENARIOS)
    assert skipped == {}


def test_all_and_scenario_together_are_a_usage_error(tmp_path: Path) -> None:
    console, out = quiet_console()
    code = run_loadtest(
        write_project(tmp_path, features=[]),
        ["health"],
        duration=1,
        connections=1,
        json_path=None,
        min_ratio=None,
        console=console,
        run_all=True,
    )
    assert code == 2
    assert "--all runs every scenario; drop --scenario" in out.getvalue()


@needs_load_tools
def test_all_measures_the_runnable_ones_and_reports_the_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured: list[str] = []

    def measure(
        project: Project, scenarios: list[Scenario], *_: object
    ) -> tuple[dict[str, Any], list[Outcome]]:
        measured.extend(s.name for s in scenarios)
        side = Side(runs=(result(1000, 4.0),) * 3)
        return {"cpu_model": "fake"}, [Outcome(s, side, side) for s in scenarios]

    monkeypatch.setattr(runner, "measure", measure)
    console, out = quiet_console()
    code = run_loadtest(
        write_project(tmp_path / "svc", features=[]),
        [],
        duration=1,
        connections=1,
        json_path=None,
        min_ratio=None,
        console=console,
        run_all=True,
        report_dir=tmp_path / "report",
        command="bulwark loadtest svc --all --report report",
    )
    printed = out.getvalue()
    assert code == 0, printed
    assert measured == [*ROUTED_NAMES, "health", "direct"]
    for name in ("nginx", "db-read", "db-read-batched", "cached-read", "overload", "loop-monitor"):
        assert f"skipped {name}: " in printed
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [s["name"] for s in document["skipped"]] == [
        "nginx",
        "db-read",
        "db-read-batched",
        "cached-read",
        "overload",
        "loop-monitor",
        "tracing",
        "container-health",
        "container-db-read",
    ]
    assert document["command"] == "bulwark loadtest svc --all --report report"
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<td>health</td>" in page
    assert "<td>direct</td>" in page
    assert "<b>db-read</b>" in page


# --- a real run ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.load
def test_all_with_a_report_on_a_rendered_sample(
    private_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every scenario of a sample with the data and shedding features, one 1 s run a side after
    the warm-up (the median of several is the unit tests'), one report."""
    if not HAVE_LOAD_TOOLS:
        pytest.skip("needs wrk, taskset and uv")
    import copier

    dest = private_dir / "report-svc"
    data = {
        "project_slug": "report-svc",
        "targets": ["nginx"],
        "features": ["postgres", "cache", "load_shedding"],
    }
    copier.run_copy(
        str(REPO_ROOT),
        dest,
        data=data,
        defaults=True,
        vcs_ref="HEAD",
        quiet=True,
    )
    console, out = quiet_console()
    code = run_loadtest(
        dest,
        [],
        duration=1,
        connections=32,
        json_path=None,
        min_ratio=None,
        console=console,
        run_all=True,
        report_dir=tmp_path / "report",
        command="test",
        repeat=1,
    )
    printed = out.getvalue()
    print(printed)
    assert code == 0, printed
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    assert document["protocol"]["runs"] == 1
    names = [s["name"] for s in document["scenarios"]]
    # No loop_monitor or tracing feature and no docker target here: those are skipped.
    expected = [
        name
        for name in SCENARIOS
        if name not in ("loop-monitor", "tracing") and not name.startswith("container-")
    ]
    if nginx.binary() is None:
        expected.remove("nginx")
    assert names == expected, printed
    overload = document["scenarios"][-1]
    assert overload["series"], "the overload run recorded no latency over time"
    assert sum(b["shed"] for b in overload["series"]) > 0
    png_size((tmp_path / "report" / "report.png").read_bytes())
    page = (tmp_path / "report" / "index.html").read_text()
    for name in names:
        assert f"<td>{name}<" in page  # a peer scenario's cell goes on with its baseline's name
