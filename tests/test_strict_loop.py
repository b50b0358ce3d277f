"""A generated project's own tests fail when a route blocks the event loop, naming the call.

The project is rendered with the loop monitor, a route that calls `time.sleep(0.3)` is added
with a test that calls it, and the project's own pytest runs its API tests: the new test fails
with the route and the stack of the blocking call; the others pass. Marked
`blocking_allowed`, the same test passes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import copier
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

BLOCKING_ROUTE = '''\
"""A route with a blocking call, as one slips into real code."""

import time

from fastapi import APIRouter

router = APIRouter()


def render_report() -> None:
    time.sleep(0.3)  # sync work on the event loop


@router.get("/reports/{report_id}")
async def report(report_id: int) -> dict[str, int]:
    render_report()
    return {"id": report_id}
'''

BLOCKING_TEST = """\
import pytest
from fastapi.testclient import TestClient

from strict_svc.api import add_routes, reports
from strict_svc.main import create_app
from strict_svc.settings import Settings


{marker}def test_report(settings: Settings) -> None:
    app = create_app(settings)
    add_routes(app, reports.router)
    with TestClient(app) as client:
        assert client.get("/reports/7").json() == {{"id": 7}}
"""


def project_tests(root: Path, *paths: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "DATABASE_URL"}}
    return subprocess.run(
        ["uv", "run", "pytest", "-q", "-p", "no:cacheprovider", *paths],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv")
def test_a_blocking_route_fails_the_projects_own_tests_with_its_stack(
    private_dir: Path,
) -> None:
    root = private_dir / "strict-svc"
    data = {"project_slug": "strict-svc", "features": ["loop_monitor"], "targets": []}
    copier.run_copy(str(REPO_ROOT), root, data=data, defaults=True, vcs_ref="HEAD", quiet=True)
    (root / "src/strict_svc/api/reports.py").write_text(BLOCKING_ROUTE)
    test_file = root / "tests/api/test_reports.py"
    test_file.write_text(BLOCKING_TEST.format(marker=""))

    run = project_tests(root, "tests/api")
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert re.search(r"\b[1-9]\d* passed, 1 error\b", out), out  # the health tests pass
    assert "ERROR tests/api/test_reports.py::test_report" in out, out
    assert "/reports/{report_id} (request " in out, out
    stack = out[out.index("the loop thread was at") :]
    assert "src/strict_svc/api/reports.py:11 in render_report" in stack, out
    assert "src/strict_svc/api/reports.py:16 in report" in stack, out

    test_file.write_text(BLOCKING_TEST.format(marker="@pytest.mark.blocking_allowed\n"))
    allowed = project_tests(root, "tests/api/test_reports.py")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
