"""`copier update` from every listed earlier version keeps the user's edits and equals a fresh copy.

The template is cloned to a temp dir, its listed commits tagged there, and a project copied at
each old tag is edited like a user would (a new route, a changed setting, a deleted example
file), committed, and updated to the working tree with `bulwark update`.
"""

import os
import subprocess
from pathlib import Path

import copier
import pytest
from conftest import REPO_ROOT
from gitrepo import commit_all, copy_working_tree, git, tree

from generator.cli import main

pytestmark = pytest.mark.slow

VERSIONS = [
    tuple(line.split())
    for line in (REPO_ROOT / "tests" / "update_versions.txt")
    .read_text(encoding="utf-8")
    .splitlines()
    if line.strip() and not line.startswith("#")
]
# Answers every listed version understands (features added later are not offered by them).
ANSWER_SETS: dict[str, dict[str, object]] = {
    "bare": {"targets": [], "features": []},
    "everything-then": {
        "targets": ["docker", "kubernetes", "systemd", "nginx"],
        "features": ["postgres"],
    },
}
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
        git(repo, "tag", version, commit)
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


def _copy(repo: Path, dest: Path, answers: dict[str, object], ref: str) -> None:
    data = {"project_slug": "orders-api", **answers}
    copier.run_copy(str(repo), dest, data=data, defaults=True, vcs_ref=ref, quiet=True)


@pytest.mark.parametrize("answer_set", ANSWER_SETS)
@pytest.mark.parametrize(("commit", "version"), VERSIONS, ids=[v for _, v in VERSIONS])
def test_update_keeps_user_edits_and_equals_a_fresh_copy(
    template_repo: Path, tmp_path: Path, commit: str, version: str, answer_set: str
) -> None:
    answers = ANSWER_SETS[answer_set]
    project = tmp_path / "project"
    _copy(template_repo, project, answers, version)
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


def test_an_updated_project_passes_its_own_checks(template_repo: Path, private_dir: Path) -> None:
    _, oldest = VERSIONS[0]
    project = private_dir / "project"
    _copy(template_repo, project, ANSWER_SETS["everything-then"], oldest)
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
