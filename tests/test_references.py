"""Every tree a reader gets is self-contained: this repository, and each project it renders.

A comment or page that points at a design brief, a tracker number or a file missing from the
reader's own tree sends them somewhere they cannot follow. Each tree is scanned for those three,
and every offending file:line is listed at once so one run shows all that remains.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from generator.harness.matrix import answer_sets

# Spelled so that this file does not match itself.
_BRIEF = re.compile(r"DESIGN\.md")
_TRACKER = re.compile(r"\bissues? ?#?[0-9]", re.IGNORECASE)
# `[text](target)` and `![alt](target "title")`; the target is checked, the title ignored.
_MD_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
# A docs page named as a whole path (not the tail of `deploy/docs/...`), read from the tree's root.
_DOCS_MENTION = re.compile(r"(?<![\w./-])docs/[\w./-]*?\.md\b")
_FENCE = re.compile(r"^\s*(```|~~~)")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)

# Never read: version control, lock files, caches, environments and build output.
SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".venv",
        "build",
        "site",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".data",
        "node_modules",
    }
)
SKIPPED_FILES = frozenset({"uv.lock"})
# Files under template/ resolve their links only once rendered: the rendered sets check them.
_RENDERED_LATER = "template"


def tree_files(root: Path) -> Iterator[Path]:
    """Every file under `root` except the skipped directories and files, in a stable order."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in SKIPPED_DIRS for part in relative.parts[:-1]):
            continue
        if path.is_file() and path.name not in SKIPPED_FILES and path.name not in SKIPPED_DIRS:
            yield path


def repository_files(root: Path) -> list[Path]:
    """The repository's files as git sees them: tracked, plus new ones not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode()
    paths = (root / name for name in sorted(set(listed.split("\0"))) if name)
    return [
        path
        for path in paths
        if path.is_file()
        and path.name not in SKIPPED_FILES
        and not SKIPPED_DIRS.intersection(path.relative_to(root).parts[:-1])
    ]


def _text(path: Path) -> str | None:
    """The file as text, or None for a binary file (a NUL byte, or not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _is_markdown(path: Path) -> bool:
    return path.name.endswith((".md", ".md.jinja"))


def _missing_link(root: Path, page: Path, target: str) -> bool:
    """True when a relative link from `page` names a file or directory absent from the tree."""
    if _URL.match(target) or target.startswith(("#", "/", "{")):
        return False
    target = target.split("#", 1)[0].split("?", 1)[0]
    if not target:
        return False
    resolved = (page.parent / target).resolve()
    return not resolved.is_relative_to(root.resolve()) or not resolved.exists()


def offences(root: Path, files: Iterable[Path]) -> list[str]:
    """`file:line: what` for every reference in `files` that a reader of `root` cannot follow."""
    found: list[str] = []
    for path in files:
        text = _text(path)
        if text is None:
            continue
        relative = path.relative_to(root)
        check_paths = relative.parts[0] != _RENDERED_LATER
        markdown = _is_markdown(path)
        in_fence = False
        for number, line in enumerate(text.splitlines(), start=1):
            where = f"{relative}:{number}"
            if _BRIEF.search(line):
                found.append(f"{where}: cites the design brief")
            if match := _TRACKER.search(line):
                found.append(f"{where}: cites a tracker number ({match.group(0)!r})")
            if not check_paths:
                continue
            if markdown and _FENCE.match(line):
                in_fence = not in_fence
                continue
            if markdown and not in_fence:
                for link in _MD_LINK.finditer(line):
                    if _missing_link(root, path, link.group(1)):
                        found.append(f"{where}: links to a missing file ({link.group(1)})")
            for mention in _DOCS_MENTION.finditer(line):
                if not (root / mention.group(0)).is_file():
                    found.append(f"{where}: names a missing page ({mention.group(0)})")
    return found


def _report(found: list[str]) -> str:
    return f"{len(found)} reference(s) a reader of this tree cannot follow:\n" + "\n".join(found)


def test_the_checker_finds_each_kind_of_offence_and_nothing_else(tmp_path: Path) -> None:
    # Assembled at run time, so the planted offences are not offences of this file.
    brief, tracker, docs = "DESIGN" + ".md", "Iss" + "ue", "do" + "cs"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "present.md").write_text("# here\n")
    (tmp_path / "docs" / "page.md").write_text(
        "[fine](present.md#anchor) [web](https://example.com) [top](#here)\n"
        "[gone](absent.md) and ![img](pics/none.png)\n"
        "```\n[in a fence](nowhere.md)\n```\n"
        f"see {docs}/present.md, not {docs}/missing.md\n"
    )
    (tmp_path / "code.py").write_text(
        f'"""Why: {brief} said so."""\n'
        f"# {tracker} 12 and {tracker.lower()} #3; t{tracker.lower()} 4 is fine\n"
        'x = d["k"](1)\n'
    )
    (tmp_path / "blob.bin").write_bytes(b"\0" + brief.encode())
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.md").write_text(f"{brief} [x](gone.md)\n")
    (tmp_path / "template").mkdir()
    (tmp_path / "template" / "README.md.jinja").write_text(f"[later]({docs}/x.md) {brief}\n")

    found = offences(tmp_path, tree_files(tmp_path))

    page = f"{docs}/page.md"
    assert found == [
        "code.py:1: cites the design brief",
        f"code.py:2: cites a tracker number ('{tracker} 1')",
        f"{page}:2: links to a missing file (absent.md)",
        f"{page}:2: links to a missing file (pics/none.png)",
        f"{page}:6: names a missing page ({docs}/missing.md)",
        "template/README.md.jinja:1: cites the design brief",
    ]
    assert "code.py:2" in _report(found)


def test_the_repository_cites_only_what_it_contains() -> None:
    found = offences(REPO_ROOT, repository_files(REPO_ROOT))
    if found:
        pytest.fail(_report(found), pytrace=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every answer set of the matrix rendered once (no checks run): name -> project root."""
    import copier

    roots: dict[str, Path] = {}
    for answer_set in answer_sets():
        dest = tmp_path_factory.mktemp(answer_set.name) / "svc"
        copier.run_copy(
            str(REPO_ROOT), dest, data=answer_set.data, defaults=True, vcs_ref="HEAD", quiet=True
        )
        roots[answer_set.name] = dest
    return roots


@pytest.mark.slow  # renders every answer set: ~40 s on 2 shared cores
@pytest.mark.parametrize("name", [answer_set.name for answer_set in answer_sets()])
def test_each_rendered_project_cites_only_what_it_contains(
    rendered: dict[str, Path], name: str
) -> None:
    root = rendered[name]
    found = offences(root, tree_files(root))
    if found:
        pytest.fail(_report(found), pytrace=False)
