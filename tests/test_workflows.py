"""The generated project's GitHub Actions workflows are valid and run what `make` runs."""

import shutil
import subprocess
from pathlib import Path

import copier
import pytest
import yaml
from conftest import REPO_ROOT

from generator.presets import get_preset

WORKFLOWS = (".github/workflows/ci.yml", ".github/workflows/template-updates.yml")


@pytest.mark.parametrize("preset", ["minimal", "full"])
def test_workflows_match_githubs_schema_and_run_make_check(preset: str, tmp_path: Path) -> None:
    answers = {**get_preset(preset).answers(), "python_version": "3.11"}
    copier.run_copy(
        str(REPO_ROOT), tmp_path, data=answers, defaults=True, vcs_ref="HEAD", quiet=True
    )
    checker = shutil.which("check-jsonschema")
    assert checker, "check-jsonschema is a dev dependency: run `uv sync`"
    checked = subprocess.run(
        [
            checker,
            "--builtin-schema",
            "vendor.github-workflows",
            *(str(tmp_path / w) for w in WORKFLOWS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    ci = yaml.safe_load((tmp_path / WORKFLOWS[0]).read_text(encoding="utf-8"))
    commands = [step.get("run", "") for step in ci["jobs"]["check"]["steps"]]
    assert "make check" in commands
    assert "uv python install 3.11" in commands

    updates = yaml.safe_load((tmp_path / WORKFLOWS[1]).read_text(encoding="utf-8"))
    script = "\n".join(step.get("run", "") for step in updates["jobs"]["copier-update"]["steps"])
    assert "copier update --defaults" in script
    assert "git status --porcelain" in script
