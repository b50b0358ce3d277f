"""Shared test fixtures: where the template lives and a fresh directory to render into."""

import fcntl
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from generator.images import Podman

# Found from this file, not from the generator package, so the tests check its own lookup.
REPO_ROOT = Path(__file__).resolve().parent.parent
# Held by every test that loads the machine for real, and by `make bench`, so load runs never
# overlap; a test holding it must not run under an outer `flock` on the same file.
LOAD_LOCK = Path("/tmp/bulwark-load.lock")


@contextmanager
def holding_load_lock() -> Iterator[None]:
    """Wait until no other load run holds `LOAD_LOCK`, then hold it."""
    with LOAD_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pytest_configure(config: pytest.Config) -> None:
    # Tests render the template's working tree (vcs_ref="HEAD" includes uncommitted edits);
    # copier warns about exactly that on every render.
    config.addinivalue_line("filterwarnings", "ignore::copier.errors.DirtyLocalWarning")


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    """An empty directory of this test's own, outside any git repository."""
    path = tmp_path / "build"
    path.mkdir()
    return path


@contextmanager
def _private_temp_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bulwark-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A temp dir outside pytest's temp root, for projects whose own tests start PostgreSQL.

    Run as root, the embedded PostgreSQL runs as its own user and opens the path to the data and
    binaries for it, while every new pytest session (the project's own included) locks its
    temp root to mode 0700 again.
    """
    with _private_temp_dir() as path:
        yield path


@pytest.fixture(scope="session")
def full_sample() -> Iterator[Path]:
    """The `full` preset (every feature and target, plain HTTP behind nginx), rendered once a
    session outside pytest's temp root (see private_dir) for the tests that run it for real:
    chaos, attack, the routed load test and the API fuzz. A render and its environment cost
    tens of seconds; each of those tests leaves the service and its database stopped."""
    import copier

    from generator.presets import get_preset

    with _private_temp_dir() as path:
        dest = path / "full-svc"
        data = {**get_preset("full").answers(), "project_slug": "full-svc", "nginx_tls": False}
        copier.run_copy(str(REPO_ROOT), dest, data=data, defaults=True, vcs_ref="HEAD", quiet=True)
        yield dest


@pytest.fixture(scope="session")
def matrix_run() -> Iterator[tuple[int, Path]]:
    """`bulwark matrix --jobs 2` over every answer set, once a session: its exit code and the
    directory holding `m/<set>` (each set rendered, then checked) and `matrix.json`. The
    matrix test reads the report; the workflow test reads the renders instead of rendering
    each set again."""
    from generator.cli import main

    with _private_temp_dir() as path:
        report = path / "matrix.json"
        code = main(["matrix", "--dest", str(path / "m"), "--jobs", "2", "--json", str(report)])
        yield code, path


# --- rendered deployment files (tests/test_deploy_*.py) ---------------------------------------

DEPLOY_SLUG = "orders-api"
ALL_TARGETS = ["docker", "kubernetes", "systemd", "nginx"]


def deploy_answer_sets() -> dict[str, dict[str, object]]:
    """Answer sets whose deployment files every deploy test checks: every feature in
    copier.yml (so features added later are covered without an edit), none, and the
    database alone with a fixed worker count."""
    from generator.answers import questions

    everything = list(questions()["features"].choices)
    return {
        "all-features": {"targets": ALL_TARGETS, "features": everything},
        "no-features": {"targets": ALL_TARGETS, "features": []},
        "postgres": {"targets": ALL_TARGETS, "features": ["postgres"], "systemd_workers": 4},
    }


@pytest.fixture(scope="session")
def deploy_sample(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Render an answer set of `deploy_answer_sets()` once per session; return its root."""
    import copier

    rendered: dict[str, Path] = {}

    def render(name: str) -> Path:
        if name not in rendered:
            data = {"project_slug": DEPLOY_SLUG, **deploy_answer_sets()[name]}
            dest = tmp_path_factory.mktemp(name) / "svc"
            copier.run_copy(
                str(REPO_ROOT), dest, data=data, defaults=True, vcs_ref="HEAD", quiet=True
            )
            rendered[name] = dest
        return rendered[name]

    return render


def venv_tool(name: str) -> str:
    """A linter installed by this repo's dev dependencies (`uv sync`), found beside python."""
    import sys

    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is missing from {path.parent}: run `uv sync` (dev group)"
    return str(path)


# --- containers (tests/test_container.py, tests/test_systemd_unit.py) --------------------------


@pytest.fixture(scope="session")
def podman() -> "Podman":
    """podman, checked by starting a hardened container; a machine that cannot is a failure
    that says what to install, never a skip."""
    from generator.images import ContainersUnavailable, Podman, ensure_uv, preflight, uv_version

    dockerfile = next((REPO_ROOT / "template/deploy").glob("*docker*/Dockerfile.jinja"))
    try:
        engine = Podman()
        preflight(engine, ensure_uv(engine, uv_version(dockerfile)))
    except ContainersUnavailable as exc:
        pytest.fail(f"containers cannot run on this machine: {exc}", pytrace=False)
    return engine
