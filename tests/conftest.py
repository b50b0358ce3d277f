"""Shared test fixtures: where the template lives and a fresh directory to render into."""

from pathlib import Path

import pytest

# Found from this file, not from the generator package, so the tests check its own lookup.
REPO_ROOT = Path(__file__).resolve().parent.parent


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
