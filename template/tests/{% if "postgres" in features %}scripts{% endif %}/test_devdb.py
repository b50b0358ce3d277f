"""The embedded PostgreSQL of `make dev`: stopped by `make db-stop` even after a killed client,
stopped by `exec` when it started it, never started on another major version's data, and
stood in for by the binaries on PATH where the wheel is missing."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from devdb import server_major, start_embedded, stop_embedded

DEVDB = Path(__file__).resolve().parents[2] / "scripts" / "devdb.py"


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text(encoding="utf-8").split()[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stop_ends_a_server_whose_client_was_killed(postgres_dir: Path) -> None:
    data_dir = postgres_dir / "postgres"
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    # Like `make dev`: `exec` starts the server, then runs a command that stays up.
    serve = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    devdb_exec = [sys.executable, str(DEVDB), "--data-dir", str(data_dir), "exec", "--"]
    client = subprocess.Popen(
        [*devdb_exec, sys.executable, "-c", serve],
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        command_pid = int(client.stdout.readline())
    finally:
        client.send_signal(signal.SIGKILL)  # no atexit: the wheel keeps it registered
        client.wait()
    os.kill(command_pid, signal.SIGKILL)
    pid = _postmaster_pid(data_dir)
    assert _alive(pid)

    stop_embedded(data_dir)

    assert not _alive(pid)
    assert (data_dir / "PG_VERSION").exists()  # the data stays


def test_exec_stops_the_server_it_started_when_the_command_ends(postgres_dir: Path) -> None:
    data_dir = postgres_dir / "postgres"
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    check_url = "import os; assert os.environ['DATABASE_URL'].startswith('postgresql://')"
    done = subprocess.run(
        [
            sys.executable,
            str(DEVDB),
            "--data-dir",
            str(data_dir),
            "exec",
            "--",
            sys.executable,
            "-c",
            check_url,
        ],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "stopped the embedded PostgreSQL" in done.stdout
    assert not (data_dir / "postmaster.pid").exists()
    assert (data_dir / "PG_VERSION").exists()  # the data stays


def test_a_data_directory_of_another_major_version_is_never_started(tmp_path: Path) -> None:
    data_dir = tmp_path / "postgres"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("16\n", encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, str(DEVDB), "--data-dir", str(data_dir), "url"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "holds a PostgreSQL 16 database" in done.stderr
    assert "docs/database.md" in done.stderr
    assert sorted(path.name for path in data_dir.iterdir()) == ["PG_VERSION"]


@pytest.mark.skipif(shutil.which("pg_ctl") is None, reason="no PostgreSQL binaries on PATH")
def test_binaries_on_path_stand_in_for_the_wheel(postgres_dir: Path) -> None:
    data_dir = postgres_dir / "path-server"
    server = start_embedded(data_dir, keep_running=False, wheel=False)
    try:
        version = asyncio.run(_server_version(server.url))
    finally:
        server.stop()
    assert version.split(".")[0] == server_major(Path(str(shutil.which("pg_ctl"))).resolve().parent)
    assert not (data_dir / "postmaster.pid").exists()


async def _server_version(url: str) -> str:
    connection = await asyncpg.connect(url)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()
