"""The generated project's automation (workflows, Dependabot, pre-commit) is valid and safe.

Every answer set of the matrix is rendered once; each file is checked by its schema or its own
tool, and the template-update job's shell is run against a scratch repository.
"""

import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml
from conftest import REPO_ROOT, venv_tool

from generator.harness.matrix import AnswerSet, answer_sets
from generator.presets import get_preset

# The version `uvx pre-commit` validates the generated config with, as a user would run it.
PRE_COMMIT = "pre-commit@4.7.0"
SHA_PINNED = re.compile(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40}  # v\d+(\.\d+)*")


def locked_version(package: str) -> str:
    """The version of `package` in this repository's uv.lock."""
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text(encoding="utf-8"))
    return str(next(p["version"] for p in lock["package"] if p["name"] == package))


def uv() -> str:
    path = shutil.which("uv")
    assert path, "uv must be on PATH: the generated project's tools run through `uvx`"
    return path


def run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module", params=answer_sets(), ids=lambda answer_set: answer_set.name)
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    answer_set: AnswerSet = request.param
    dest = tmp_path_factory.mktemp(answer_set.name)
    copier.run_copy(
        str(REPO_ROOT), dest, data=answer_set.data, defaults=True, vcs_ref="HEAD", quiet=True
    )
    return dest


def load(path: Path) -> Any:
    """The parsed YAML file: nested mappings the tests index freely."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def docker_on(project: Path) -> bool:
    return (project / "deploy" / "docker" / "Dockerfile").exists()


def test_workflows_match_githubs_schema_and_pin_actions_by_sha(project: Path) -> None:
    workflows = sorted((project / ".github" / "workflows").glob("*.yml"))
    expected = {"ci.yml", "security.yml", "template-updates.yml"}
    assert {w.name for w in workflows} == expected | (
        {"image.yml"} if docker_on(project) else set()
    )
    checked = run(
        venv_tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.github-workflows",
        *map(str, workflows),
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for workflow in workflows:
        uses = [line.strip() for line in workflow.read_text().splitlines() if "uses:" in line]
        assert uses, workflow.name
        unpinned = [line for line in uses if not SHA_PINNED.fullmatch(line.removeprefix("- "))]
        assert not unpinned, f"{workflow.name}: pin actions by commit SHA with a # vX comment"


def test_automation_files_pass_the_projects_yamllint(project: Path) -> None:
    """`make manifests-check` runs `yamllint --strict .`, which reads these files too."""
    config = project / ".yamllint.yaml"
    if not config.exists():
        pytest.skip("no deployment target: the project has no yamllint config")
    files = [project / ".pre-commit-config.yaml", project / ".github"]
    linted = run(venv_tool("yamllint"), "--strict", "-c", str(config), *map(str, files))
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_zizmor_finds_nothing_in_the_workflows(project: Path) -> None:
    """security.yml runs this very zizmor and fails on any finding, so the template has none."""
    security = (project / ".github/workflows/security.yml").read_text(encoding="utf-8")
    zizmor = re.search(r"uvx (zizmor@[\d.]+) ", security)
    assert zizmor, "security.yml runs a pinned zizmor"
    audited = run(uv(), "tool", "run", zizmor[1], "--offline", ".github/workflows", cwd=project)
    assert audited.returncode == 0, audited.stdout + audited.stderr


def test_security_workflow_audits_the_lock_and_the_workflows(project: Path) -> None:
    security = load(project / ".github/workflows/security.yml")
    jobs = security["jobs"]
    steps = [step for job in jobs.values() for step in job["steps"]]
    commands = [step.get("run", "") for step in steps]
    assert "uv audit --frozen" in commands
    assert any(c.startswith("uvx zizmor@") and c.endswith(" .github/workflows") for c in commands)
    # The uv that runs `uv audit` is pinned: an older one has no such command.
    setup_uv = next(s for s in jobs["dependencies"]["steps"] if "setup-uv" in s.get("uses", ""))
    assert re.fullmatch(r"\d+\.\d+\.\d+", setup_uv["with"]["version"])
    triggers = security[True]  # YAML 1.1 reads the key `on` as true
    assert {"pull_request", "schedule"} <= triggers.keys()
    assert security["permissions"] == {"contents": "read"}


def test_dependabot_matches_its_schema_and_the_projects_ecosystems(project: Path) -> None:
    config = project / ".github" / "dependabot.yml"
    checked = run(
        venv_tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(config)
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    updates = load(config)["updates"]
    ecosystems = {u["package-ecosystem"]: u for u in updates}
    assert set(ecosystems) == {"uv", "github-actions"} | (
        {"docker"} if docker_on(project) else set()
    )
    for ecosystem, update in ecosystems.items():
        assert update["schedule"]["interval"] == "weekly", ecosystem
        assert update["groups"]["minor-and-patch"]["update-types"] == ["minor", "patch"]
        directory = project / update["directory"].lstrip("/")
        manifest = {"uv": "uv.lock", "github-actions": ".github", "docker": "Dockerfile"}[ecosystem]
        # uv.lock is written by `uv lock`, after rendering: pyproject.toml stands beside it.
        present = "pyproject.toml" if ecosystem == "uv" else manifest
        assert (directory / present).exists(), f"{ecosystem}: nothing to update in {directory}"


def test_pre_commit_config_is_valid_and_runs_the_projects_checks(project: Path) -> None:
    config = project / ".pre-commit-config.yaml"
    validated = run(uv(), "tool", "run", PRE_COMMIT, "validate-config", str(config))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    repos = {repo["repo"]: repo for repo in load(config)["repos"]}
    ruff = repos["https://github.com/astral-sh/ruff-pre-commit"]
    assert ruff["rev"] == f"v{locked_version('ruff')}"
    assert [hook["id"] for hook in ruff["hooks"]] == ["ruff-check", "ruff-format"]
    local = [hook["entry"] for hook in repos["local"]["hooks"]]
    assert local == ["make typecheck"]
    makefile = (project / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^typecheck:", makefile, re.MULTILINE), "the hook's make target exists"


def test_template_updates_run_a_pinned_copier_without_trust_and_open_a_pull_request(
    project: Path,
) -> None:
    path = project / ".github" / "workflows" / "template-updates.yml"
    workflow = load(path)
    assert workflow["permissions"] == {}
    job = workflow["jobs"]["copier-update"]
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert job["env"]["BRANCH"] == "template-update"
    script = "\n".join(step.get("run", "") for step in job["steps"])
    assert f"uvx copier@{locked_version('copier')} update --defaults --conflict inline" in script
    assert "--trust" not in script.replace("No --trust", "")
    assert "gh pr create" in script
    assert "gh pr edit" in script
    assert "exit 1" not in script


FAKE_GH = """#!/usr/bin/env bash
echo "$*" >> "$GH_LOG"
if [ "$1 $2" = "pr list" ]; then echo "${OPEN_PR:-}"; fi
"""


def pull_request_step(workflow: Path) -> str:
    steps = load(workflow)["jobs"]["copier-update"]["steps"]
    return str(next(s["run"] for s in steps if s.get("name", "").startswith("Open or update")))


@pytest.fixture
def scratch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A clone with a local origin and a `gh` that only records its arguments."""
    origin, clone, bin_dir = tmp_path / "origin.git", tmp_path / "clone", tmp_path / "bin"
    assert run("git", "init", "--quiet", "--bare", "-b", "main", str(origin)).returncode == 0
    assert run("git", "clone", "--quiet", str(origin), str(clone)).returncode == 0
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH, encoding="utf-8")
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GH_LOG": str(tmp_path / "gh.log"),
        "RUNNER_TEMP": str(tmp_path),
        "BRANCH": "template-update",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@localhost",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@localhost",
    }
    (clone / "app.py").write_text("x = 1\n", encoding="utf-8")
    (clone / "README.md").write_text("readme\n", encoding="utf-8")
    for git in (
        ["add", "."],
        ["commit", "--quiet", "-m", "init"],
        ["push", "-q", "origin", "main"],
    ):
        done = subprocess.run(["git", *git], cwd=clone, env=env, capture_output=True, check=False)
        assert done.returncode == 0, done.stderr
    return clone, env


def run_step(script: str, clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The shell GitHub runs `run:` steps with.
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def update_workflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("minimal")
    copier.run_copy(
        str(REPO_ROOT),
        dest,
        data=get_preset("minimal").answers(),
        defaults=True,
        vcs_ref="HEAD",
        quiet=True,
    )
    return dest / ".github" / "workflows" / "template-updates.yml"


def test_an_update_opens_a_pull_request_listing_changes_and_conflicts(
    update_workflow: Path, scratch: tuple[Path, dict[str, str]]
) -> None:
    clone, env = scratch
    # What `copier update --conflict inline` leaves: a changed file, a conflict, a new file.
    (clone / "README.md").write_text("readme, updated\n", encoding="utf-8")
    (clone / "app.py").write_text(
        "<<<<<<< before updating\nx = 1\n=======\nx = 2\n>>>>>>> after updating\n",
        encoding="utf-8",
    )
    (clone / "new.py.rej").write_text("@@ hunk\n", encoding="utf-8")

    done = run_step(pull_request_step(update_workflow), clone, env)
    assert done.returncode == 0, done.stdout + done.stderr

    calls = Path(env["GH_LOG"]).read_text(encoding="utf-8").splitlines()
    created = [c for c in calls if c.startswith("pr create")]
    assert len(created) == 1
    assert "--head template-update --base main" in created[0]
    body = (Path(env["RUNNER_TEMP"]) / "body.md").read_text(encoding="utf-8")
    changes, conflicts = body.split("## Conflicts")
    assert "M\tREADME.md" in changes
    assert "A\tnew.py.rej" in changes
    assert "- app.py" in conflicts
    assert "- new.py.rej" in conflicts
    assert "- README.md" not in conflicts
    pushed = run("git", "ls-remote", "origin", "template-update", cwd=clone)
    assert pushed.stdout.strip(), "the update branch is pushed"


def test_an_open_pull_request_is_edited_not_duplicated(
    update_workflow: Path, scratch: tuple[Path, dict[str, str]]
) -> None:
    clone, env = scratch
    (clone / "README.md").write_text("readme, updated\n", encoding="utf-8")
    done = run_step(pull_request_step(update_workflow), clone, {**env, "OPEN_PR": "7"})
    assert done.returncode == 0, done.stdout + done.stderr
    calls = Path(env["GH_LOG"]).read_text(encoding="utf-8").splitlines()
    assert not any(c.startswith("pr create") for c in calls)
    assert any(c.startswith("pr edit 7 ") for c in calls)
    body = (Path(env["RUNNER_TEMP"]) / "body.md").read_text(encoding="utf-8")
    assert "None: every change applied cleanly." in body


def test_no_update_means_no_pull_request_and_no_failure(
    update_workflow: Path, scratch: tuple[Path, dict[str, str]]
) -> None:
    clone, env = scratch
    done = run_step(pull_request_step(update_workflow), clone, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not Path(env["GH_LOG"]).exists(), "gh is not called when nothing changed"


@pytest.mark.parametrize("preset", ["minimal", "full"])
def test_ci_runs_make_check_on_the_chosen_python(preset: str, tmp_path: Path) -> None:
    answers = {**get_preset(preset).answers(), "python_version": "3.11"}
    copier.run_copy(
        str(REPO_ROOT), tmp_path, data=answers, defaults=True, vcs_ref="HEAD", quiet=True
    )
    ci = load(tmp_path / ".github" / "workflows" / "ci.yml")
    commands = [step.get("run", "") for step in ci["jobs"]["check"]["steps"]]
    assert "make check" in commands
    assert "uv python install 3.11" in commands
