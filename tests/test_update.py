"""Versions: one in pyproject.toml, named by CHANGELOG.md, and updates from each listed one.

`copier update` from every version in update_versions.txt keeps the user's edits and equals a
fresh copy: the template is cloned to a temp dir, the listed commits tagged there as releases
are, and a project copied at each old tag is edited like a user would (a new route, a changed
setting, a deleted example file), committed, and updated to the working tree with
`bulwark update`.
"""

import os
import re
import subprocess
import tomllib
from pathlib import Path

import copier
import pytest
import yaml
from conftest import REPO_ROOT
from gitrepo import commit_all, copy_working_tree, git, tree
from packaging.version import Version

from generator.cli import main

VERSIONS = [
    tuple(line.split())
    for line in (REPO_ROOT / "tests" / "update_versions.txt")
    .read_text(encoding="utf-8")
    .splitlines()
    if line.strip() and not line.startswith("#")
]
# Release headings, newest first: "## [1.2.0] - 2026-12-01".
RELEASED = re.findall(
    r"^## \[(\S+)\] - \d{4}-\d{2}-\d{2}$",
    (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8"),
    flags=re.MULTILINE,
)
ANSWER_SETS = ("bare", "everything-then")
RELEASING = (REPO_ROOT / "docs" / "releasing.md").read_text(encoding="utf-8")
PACKAGE = "orders_api"
EXTRA_ROUTE = f"src/{PACKAGE}/api/reports.py"
EXTRA_TEST = "tests/test_reports.py"
DELETED = ".env.example"
SETTING_BEFORE = "slow_request_ms: float = Field(default=1000.0, gt=0)"
SETTING_AFTER = "slow_request_ms: float = Field(default=250.0, gt=0)"


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of this repository with the listed versions tagged and the working tree on top."""
    repo = tmp_path_factory.mktemp("template") / "bulwark"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(repo)], check=True)
    for commit, version in VERSIONS:
        git(repo, "tag", f"v{version}", commit)
    git(repo, "rm", "-rq", ".")
    copy_working_tree(repo)
    commit_all(repo, "working tree under test")
    return repo


def _edit_like_a_user(project: Path) -> None:
    (project / EXTRA_ROUTE).write_text(
        '"""Reports: added by the service owner."""\n\n'
        "from fastapi import APIRouter\n\n"
        'router = APIRouter(prefix="/reports")\n\n\n'
        '@router.get("")\n'
        "async def reports() -> list[str]:\n"
        "    return []\n",
        encoding="utf-8",
    )
    (project / EXTRA_TEST).write_text(
        f'"""The owner\'s own route answers."""\n\n'
        "from fastapi import FastAPI\n"
        "from fastapi.testclient import TestClient\n\n"
        f"from {PACKAGE}.api.reports import router\n\n\n"
        "def test_reports_list_is_empty() -> None:\n"
        "    app = FastAPI()\n"
        "    app.include_router(router)\n"
        '    assert TestClient(app).get("/reports").json() == []\n',
        encoding="utf-8",
    )
    settings = project / f"src/{PACKAGE}/settings.py"
    text = settings.read_text(encoding="utf-8")
    assert SETTING_BEFORE in text
    settings.write_text(text.replace(SETTING_BEFORE, SETTING_AFTER), encoding="utf-8")
    (project / DELETED).unlink()


def _answers(repo: Path, ref: str, answer_set: str) -> dict[str, object]:
    """No target or feature (`bare`), or every target and feature the version at `ref` offers;
    the Python that version defaults to, which an update keeps (a fresh copy must too)."""
    config = yaml.safe_load(git(repo, "show", f"{ref}:copier.yml"))
    python = {"python_version": config["python_version"]["default"]}
    if answer_set == "bare":
        return {"targets": [], "features": [], **python}
    choices = {name: list(config[name]["choices"].values()) for name in ("targets", "features")}
    return {**choices, **python}


def _copy(repo: Path, dest: Path, answers: dict[str, object], ref: str) -> None:
    data = {"project_slug": "orders-api", **answers}
    copier.run_copy(str(repo), dest, data=data, defaults=True, vcs_ref=ref, quiet=True)


def test_the_newest_release_is_the_version_bulwark_reports(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sorted(RELEASED, key=Version, reverse=True) == RELEASED
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == RELEASED[0]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"bulwark {RELEASED[0]}\n"


def test_every_version_updated_from_is_a_release_in_the_changelog() -> None:
    assert [version for _, version in VERSIONS if version not in RELEASED] == []


def _example(language: str, marker: str) -> str:
    """The one fenced `language` block of docs/releasing.md that contains `marker`."""
    blocks: list[str] = re.findall(
        rf"^```{language}\n(.*?)^```$", RELEASING, flags=re.MULTILINE | re.DOTALL
    )
    [block] = [block for block in blocks if marker in block]
    return block


def test_the_documented_migration_carries_a_renamed_answer_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/releasing.md's example, on a small template with the answer and file it renames."""
    template = tmp_path / "template"
    (template / "template" / "scripts").mkdir(parents=True)
    (template / "template" / "{{_copier_conf.answers_file}}.jinja").write_text(
        "{{ _copier_answers|to_nice_yaml -}}\n", encoding="utf-8"
    )
    question = "  type: str\n  multiselect: true\n  choices: [docker, kubernetes]\n  default: []\n"
    copier_yml = template / "copier.yml"
    copier_yml.write_text(f"_subdirectory: template\ntargets:\n{question}", encoding="utf-8")
    devdb = template / "template" / "scripts" / "devdb.py"
    devdb.write_text('"""Start the development database."""\n', encoding="utf-8")
    git(template, "init", "-q")
    commit_all(template, "0.3.0")
    git(template, "tag", "v0.3.0")
    git(template, "mv", "template/scripts/devdb.py", "template/scripts/db.py")
    copier_yml.write_text(
        f"_subdirectory: template\ndeploy_targets:\n{question}{_example('yaml', '_migrations')}",
        encoding="utf-8",
    )
    (template / "migrations").mkdir()
    (template / "migrations" / "v0.4.0.py").write_text(
        _example("python", "0.4.0"), encoding="utf-8"
    )
    commit_all(template, "0.4.0")
    git(template, "tag", "v0.4.0")

    project = tmp_path / "project"
    copier.run_copy(
        str(template), project, data={"targets": ["docker"]}, vcs_ref="v0.3.0", quiet=True
    )
    git(project, "init", "-q")
    owners_line = "PORT = 5433  # the owner's edit\n"
    with (project / "scripts" / "devdb.py").open("a", encoding="utf-8") as script:
        script.write(owners_line)
    commit_all(project, "generated at 0.3.0, edited")
    update = ["update", str(project), "--defaults", "--vcs-ref", "v0.4.0"]

    assert main(update) == 2
    assert "--trust" in capsys.readouterr().err
    assert main([*update, "--trust"]) == 0

    answers = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert (answers["deploy_targets"], "targets" in answers) == (["docker"], False)
    assert not (project / "scripts" / "devdb.py").exists()
    assert owners_line in (project / "scripts" / "db.py").read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("answer_set", ANSWER_SETS)
@pytest.mark.parametrize(("commit", "version"), VERSIONS, ids=[v for _, v in VERSIONS])
def test_update_keeps_user_edits_and_equals_a_fresh_copy(
    template_repo: Path, tmp_path: Path, commit: str, version: str, answer_set: str
) -> None:
    answers = _answers(template_repo, f"v{version}", answer_set)
    project = tmp_path / "project"
    _copy(template_repo, project, answers, f"v{version}")
    git(project, "init", "-q")
    commit_all(project, f"generated at {version}")
    _edit_like_a_user(project)
    commit_all(project, "owner's edits")

    assert main(["update", str(project), "--vcs-ref", "HEAD", "--defaults"]) == 0

    files = tree(project)
    conflicted = [
        name for name, text in files.items() if b"<<<<<<<" in text or name.endswith(".rej")
    ]
    assert conflicted == []
    assert SETTING_AFTER in files[f"src/{PACKAGE}/settings.py"].decode()
    assert EXTRA_ROUTE in files
    assert DELETED not in files

    fresh = tmp_path / "fresh"
    _copy(template_repo, fresh, answers, "HEAD")
    _edit_like_a_user(fresh)
    assert files == tree(fresh)


@pytest.mark.slow
def test_an_updated_project_passes_its_own_checks(template_repo: Path, private_dir: Path) -> None:
    _, oldest = VERSIONS[0]
    project = private_dir / "project"
    answers = _answers(template_repo, f"v{oldest}", "everything-then")
    _copy(template_repo, project, answers, f"v{oldest}")
    git(project, "init", "-q")
    commit_all(project, f"generated at {oldest}")
    _edit_like_a_user(project)
    commit_all(project, "owner's edits")
    assert main(["update", str(project), "--vcs-ref", "HEAD", "--defaults"]) == 0

    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAKE", "MFLAGS")) and key not in ("DATABASE_URL", "VIRTUAL_ENV")
    }
    checked = subprocess.run(
        ["make", "check"], cwd=project, env=environment, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout[-6000:] + checked.stderr[-3000:]
