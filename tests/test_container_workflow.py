"""The generated project's image workflow: valid for GitHub in every answer set of the matrix,
present exactly when the project has a Dockerfile, every action pinned by commit, and it runs
the image the way the deployment files do."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from generator.harness.matrix import AnswerSet, answer_sets

pytestmark = pytest.mark.slow

PINNED = re.compile(r"^\s*(?:-\s*)?uses:\s*[\w.-]+/[\w./-]+@[0-9a-f]{40}  # v\d+(\.\d+)*\s*$")


@pytest.mark.parametrize("answer_set", answer_sets(), ids=lambda s: s.name)
def test_workflows_are_valid_pinned_and_run_the_image_hardened(
    answer_set: AnswerSet, matrix_run: tuple[int, Path]
) -> None:
    root = matrix_run[1] / "m" / answer_set.name  # the matrix rendered it from these answers
    workflows = sorted((root / ".github/workflows").glob("*.yml"))
    assert workflows, f"{answer_set.name} did not render"
    image = root / ".github/workflows/image.yml"
    assert (image in workflows) == ("docker" in answer_set.targets)

    checker = shutil.which("check-jsonschema")
    assert checker, "check-jsonschema is a dev dependency: run `uv sync`"
    checked = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", *map(str, workflows)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    for workflow in workflows:
        uses = [line for line in workflow.read_text().splitlines() if "uses:" in line]
        assert uses
        unpinned = [line.strip() for line in uses if not PINNED.match(line)]
        assert unpinned == [], f"{workflow.name}: pin by commit with the version in a comment"

    if image in workflows:
        _check_image_job(image, answer_set)


def _check_image_job(image: Path, answer_set: AnswerSet) -> None:
    job = yaml.safe_load(image.read_text(encoding="utf-8"))["jobs"]["build-and-run"]
    hardened = job["env"]["HARDENED"].split()
    for flag in ("--read-only", "--user", "10001:10001", "--cap-drop", "ALL", "--tmpfs", "/tmp"):
        assert flag in hardened
    assert "no-new-privileges:true" in hardened
    script = "\n".join(step.get("run", "") for step in job["steps"])
    assert 'docker build -f deploy/docker/Dockerfile -t "$IMAGE" .' in script
    assert "curl -fsS http://127.0.0.1:8000/health" in script
    assert "docker stop --time 45 app" in script
    package = str(answer_set.data["project_slug"]).replace("-", "_")
    has_postgres = "postgres" in answer_set.features
    assert (f"python -m {package}.db.migrate" in script) == has_postgres
    assert ("DATABASE_URL=postgresql://app:app@127.0.0.1:5432/app" in hardened) == has_postgres
    assert set(job.get("services", {})) <= {"postgres", "redis"}
    assert ("postgres" in job.get("services", {})) == has_postgres
