"""The commands `bulwark new` prints work in a fresh shell: one whose PATH lacks uv finds it
where its installer puts it (~/.local/bin), and one with no uv at all says how to get it."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from generator.cli import main

# A login shell's PATH before any profile adds ~/.local/bin: make, bash and coreutils only.
FRESH_PATH = "/usr/bin:/bin"


def fresh_shell(home: Path) -> dict[str, str]:
    """The environment of a new terminal: this HOME, the bare PATH, no make or venv state."""
    kept = {"LANG", "TERM", "TMPDIR", "USER"}
    return {
        **{key: value for key, value in os.environ.items() if key in kept},
        "HOME": str(home),
        "PATH": FRESH_PATH,
    }


def printed_make_commands(printed: str) -> list[list[str]]:
    """The `make ...` lines of the "Next steps" `bulwark new` printed, without their comments."""
    steps = printed.split("Next steps:", 1)[1].split("\n\n", 1)[0]
    return [
        line.split("#", 1)[0].split()
        for line in steps.splitlines()
        if line.strip().startswith("make ")
    ]


@pytest.mark.parametrize("preset", ["minimal", "api-postgres"])
def test_printed_commands_find_uv_in_local_bin_when_path_lacks_it(
    preset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "svc"
    assert main(["new", str(dest), "--preset", preset, "--defaults", "--vcs-ref", "HEAD"]) == 0
    captured = capsys.readouterr()
    commands = printed_make_commands(captured.out + captured.err)
    assert [command[:2] for command in commands] == [
        ["make", "install"],
        ["make", "dev"],
        ["make", "check"],
    ]
    home = tmp_path / "home"
    uv = home / ".local" / "bin" / "uv"
    uv.parent.mkdir(parents=True)
    # Stands in for uv: says how it was called, so no environment is built.
    uv.write_text('#!/bin/sh\necho "uv called: $*"\n', encoding="utf-8")
    uv.chmod(uv.stat().st_mode | stat.S_IXUSR)

    for command in commands:
        done = subprocess.run(
            command, cwd=dest, env=fresh_shell(home), capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert f"{uv} sync" in done.stdout, (command, done.stdout)
        assert "uv called: sync" in done.stdout, (command, done.stdout)


def test_a_shell_without_uv_is_told_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "svc"
    assert main(["new", str(dest), "--preset", "minimal", "--defaults", "--vcs-ref", "HEAD"]) == 0
    captured = capsys.readouterr()
    install = printed_make_commands(captured.out + captured.err)[0]
    home = tmp_path / "home"
    home.mkdir()

    done = subprocess.run(
        install, cwd=dest, env=fresh_shell(home), capture_output=True, text=True, check=False
    )

    assert done.returncode != 0
    assert "uv not found: install it (https://docs.astral.sh/uv/) or put it on PATH" in done.stderr
