"""How `bulwark chaos` and `bulwark attack` report a run (generator/harness/suite.py), on canned
results: the JSON, the exit codes, the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_loadtest import quiet_console

from generator.harness.project import ServiceError
from generator.harness.suite import Result, run_suite


def result(name: str, value: float) -> Result:
    checked = Result(name, figures={"sent": 10})
    checked.at_most("errors", "requests failed", value, 0)
    return checked


def report(
    results: list[Result] | BaseException, json_path: Path | None
) -> tuple[int, str, Path | None]:
    """run_suite over `results` (or a `run` raising it); the exit code, what it printed and the
    directory `run` was given for server output."""
    given: list[Path | None] = []

    def run(log_dir: Path | None) -> tuple[dict[str, Any], list[Result]]:
        given.append(log_dir)
        if isinstance(results, BaseException):
            raise results
        return {"cpu_model": "Test CPU"}, results

    console, out = quiet_console()
    code = run_suite(
        run,
        errors=(ServiceError,),
        title="bulwark test",
        summary="the protocol line",
        about={"protocol": {"connections": 8}, "skipped": ["no redis"]},
        json_path=json_path,
        console=console,
    )
    return code, out.getvalue(), given[0]


def test_a_met_run_exits_0_and_writes_every_figure(tmp_path: Path) -> None:
    json_path = tmp_path / "out" / "run.json"
    code, printed, log_dir = report([result("first", 0), result("second", 0)], json_path)
    assert code == 0, printed
    assert log_dir == tmp_path / "out" / "run.logs"
    document = json.loads(json_path.read_text())
    assert list(document) == ["machine", "protocol", "skipped", "scenarios"]
    assert document["machine"] == {"cpu_model": "Test CPU"}
    assert document["protocol"] == {"connections": 8}
    first = document["scenarios"][0]
    assert (first["name"], first["passed"], first["errors"]) == ("first", True, 0)
    assert first["checks"] == [
        {
            "key": "errors",
            "figure": "requests failed",
            "value": 0,
            "unit": "",
            "target": "<= 0",
            "passed": True,
        }
    ]
    assert first["figures"] == {"sent": 10}
    assert "bulwark test" in printed
    assert "the protocol line" in printed
    assert "targets missed" not in printed


def test_a_missed_target_exits_1_and_names_the_scenario() -> None:
    code, printed, log_dir = report([result("first", 0), result("second", 3)], None)
    assert code == 1
    assert log_dir is None
    assert "targets missed: second" in printed
    assert "MISSED" in printed


def test_a_listed_error_exits_1_and_an_interrupt_130() -> None:
    code, printed, _ = report(ServiceError("the service did not start"), None)
    assert (code, "error: the service did not start" in printed) == (1, True)
    code, printed, _ = report(KeyboardInterrupt(), None)
    assert (code, "interrupted" in printed) == (130, True)
