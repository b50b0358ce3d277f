"""The repository's docs site builds with `mkdocs build --strict`: every page in the nav, every
link and anchor resolving. The same build over a copy with a planted orphan page and broken
links proves the configuration really refuses them."""

import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO_ROOT, venv_tool

# Material prints an end-of-life banner on every build; the build's own warnings are what count.
_ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("mkdocs"), "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        env=_ENV,
        timeout=300,
    )


def test_the_docs_site_builds_strict_with_every_page(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = build(REPO_ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stderr
    for page in (REPO_ROOT / "docs").rglob("*.md"):
        relative = page.relative_to(REPO_ROOT / "docs").with_suffix("")
        built = site / ("" if relative.name == "index" else relative) / "index.html"
        assert built.is_file(), f"{page} was not built"


def test_an_orphan_page_or_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    docs = tmp_path / "docs"
    shutil.copytree(REPO_ROOT / "docs", docs)
    (docs / "orphan.md").write_text("# Not in the nav\n")
    with (docs / "index.md").open("a") as index:
        index.write("\n[gone](missing-page.md) [no such part](architecture.md#no-such-heading)\n")

    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")

    assert result.returncode != 0
    for named in ("orphan.md", "missing-page.md", "no-such-heading"):
        assert named in result.stderr, f"{named} not reported:\n{result.stderr}"
