"""The answer matrix covers every achievable pair of choices, and every set passes its checks."""

import itertools
import json
from pathlib import Path

import pytest

from generator.answers import questions
from generator.cli import main
from generator.harness.matrix import answer_sets
from generator.harness.pairwise import answers, covering_rows, factors, is_valid


def _impossible(pair: tuple[tuple[str, object], tuple[str, object]]) -> bool:
    """copier.yml refuses kubernetes without docker; no valid set can hold that pair."""
    return set(pair) == {("target:docker", False), ("target:kubernetes", True)}


def test_every_achievable_pair_is_covered_by_a_valid_row() -> None:
    rows = covering_rows()
    assert all(is_valid(row) for row in rows)
    dims = factors()
    for a, b in itertools.combinations(dims, 2):
        for value_a, value_b in itertools.product(a.values, b.values):
            pair = ((a.name, value_a), (b.name, value_b))
            covered = any(row[a.name] == value_a and row[b.name] == value_b for row in rows)
            assert covered != _impossible(pair), pair


def test_all_on_and_all_off_come_first() -> None:
    first, second = (answers(row) for row in covering_rows()[:2])
    assert first["targets"] == list(questions()["targets"].choices)
    assert first["features"] == list(questions()["features"].choices)
    assert (second["targets"], second["features"]) == ([], [])


def test_the_matrix_is_stable_and_far_smaller_than_every_combination() -> None:
    assert covering_rows() == covering_rows()
    every_combination = 2 ** (len(factors()) - 1) * len(questions()["python_version"].choices)
    assert len(covering_rows()) <= max(12, every_combination // 20)


def test_list_prints_the_sets_without_rendering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["matrix", "--list", "--dest", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    assert all(answer_set.name in printed for answer_set in answer_sets())
    assert not (tmp_path / "m").exists()


def test_only_refuses_an_unknown_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix", "--list", "--only", "m99"]) == 2
    assert "unknown set m99" in capsys.readouterr().err


@pytest.mark.slow
def test_every_answer_set_passes_its_own_checks(matrix_run: tuple[int, Path]) -> None:
    code, run_dir = matrix_run
    report = json.loads((run_dir / "matrix.json").read_text(encoding="utf-8"))
    failures = [(s["name"], s["failed_step"], s["log"]) for s in report["sets"] if not s["ok"]]
    # The whole log of each failed set: pytest's diff of the list would cut it short.
    assert failures == [], "\n\n".join(f"{name}, {step}:\n{log}" for name, step, log in failures)
    assert code == 0
    assert report["passed"] == len(answer_sets())
