"""Git helpers for tests that need a template with history, or compare rendered trees."""

import shutil
import subprocess
from pathlib import Path

from conftest import REPO_ROOT

GIT_IDENTITY = ("-c", "user.email=t@t", "-c", "user.name=t")
VOLATILE_ANSWERS = ("_commit:", "_src_path:")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)


def copy_working_tree(dest: Path) -> None:
    """Copy the template's working tree (committed or not, minus ignored files) into `dest`."""
    listed = git(REPO_ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():  # staged files may since have been deleted
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def tree(root: Path, *, skip: tuple[str, ...] = (".git/",)) -> dict[str, bytes]:
    """Every file under root by relative path, minus `skip` prefixes and answer provenance."""
    files = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if not path.is_file() or name.startswith(skip):
            continue
        content = path.read_bytes()
        if path.name == ".copier-answers.yml":
            content = b"".join(
                line
                for line in content.splitlines(keepends=True)
                if not line.decode().startswith(VOLATILE_ANSWERS)
            )
        files[name] = content
    return files
