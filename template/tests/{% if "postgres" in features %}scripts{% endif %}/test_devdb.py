"""The embedded PostgreSQL of `make dev`: stopped by `make db-stop` even after a killed client,
stopped by `exec` when it started it (Ctrl-C included), never started on nor joined to another
major version's data, and stood in for by the binaries on PATH where the wheel is missing."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
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


def _postgres_16_left_running(data_dir: Path, postmaster: subprocess.Popen[bytes]) -> None:
    """The files an older project's `make dev` (the `pgserver` wheel) leaves in `.data/postgres`,
    its server still up: `postmaster` stands in for that server, named in `postmaster.pid`."""
    for name, text in {
        "PG_VERSION": "16\n",
        "base/1/PG_VERSION": "16\n",
        "global/pg_control": "\0" * 64,
        "pg_wal/000000010000000000000001": "\0" * 64,
        "postgresql.conf": "listen_addresses = ''\n",
        "pg_hba.conf": "local all all trust\n",
        "postmaster.opts": f"/venv/pgserver/pginstall/bin/postgres -D {data_dir}\n",
        "postmaster.pid": f"{postmaster.pid}\n{data_dir}\n1700000000\n5432\n{data_dir}\n\n",
        ".handle_pids.json": f"[{postmaster.pid}]\n",
    }.items():
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / name).write_text(text, encoding="utf-8")


def _files(data_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(data_dir)): p.read_bytes() for p in data_dir.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("action", ["url", "exec"])
def test_a_postgres_16_data_directory_is_never_started_nor_joined(
    tmp_path: Path, action: str
) -> None:
    """`make db-url` (url) and `make dev` (exec) after `copier update` from PostgreSQL 16: the
    owner is told what to do, the old server and its files are left as they were, the command
    never runs, and the printed way to start afresh then works."""
    data_dir, ran = tmp_path / "postgres", tmp_path / "ran"
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    devdb = [sys.executable, str(DEVDB), "--data-dir", str(data_dir)]
    command = ["exec", "--migrate", "--", sys.executable, "-c", f"open({str(ran)!r}, 'w')"]
    # Ends on SIGINT as a postmaster does (its "fast" shutdown), not with a traceback.
    stand_in = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); time.sleep(60)"
    with subprocess.Popen([sys.executable, "-c", stand_in]) as postmaster:
        # Reaped as soon as it ends, as a real postmaster (no child of ours) would vanish.
        threading.Thread(target=postmaster.wait, daemon=True).start()
        try:
            _postgres_16_left_running(data_dir, postmaster)
            before = _files(data_dir)
            done = subprocess.run(
                [*devdb, *(command if action == "exec" else ["url"])],
                env=environment,
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode != 0
            assert "holds a PostgreSQL 16 database" in done.stderr
            assert "cannot open it, so nothing was started" in done.stderr
            assert 'docs/database.md says under "A data directory from an older PostgreSQL"' in (
                done.stderr
            )
            assert not ran.exists()
            assert postmaster.returncode is None  # neither stopped nor signalled
            assert _files(data_dir) == before  # no new server: same postmaster.pid, no socket

            afresh = done.stderr.split("To start afresh (it is development data): ")[1]
            stop = afresh.splitlines()[0].removeprefix("uv run python scripts/devdb.py ")
            stop, remove = stop.split(" && ")
            subprocess.run([sys.executable, str(DEVDB), *stop.split()], check=True)
            assert postmaster.wait(timeout=10) == -signal.SIGINT
            assert remove == f"rm -rf {data_dir}"
        finally:
            postmaster.kill()


def test_ctrl_c_on_exec_stops_the_server_it_started(postgres_dir: Path) -> None:
    """A terminal's Ctrl-C reaches the whole foreground group (`make dev`, devdb, the service):
    the server `exec` started stops with them."""
    data_dir = postgres_dir / "postgres"
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    serve = "import time; print('serving', flush=True); time.sleep(60)"
    devdb_exec = [sys.executable, str(DEVDB), "--data-dir", str(data_dir), "exec", "--"]
    with subprocess.Popen(
        [*devdb_exec, sys.executable, "-c", serve],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the interrupted sleep's traceback
        text=True,
        start_new_session=True,  # its own group, as a terminal's foreground job is
    ) as session:
        assert session.stdout is not None
        assert session.stdout.readline() == "serving\n"
        pid = _postmaster_pid(data_dir)
        os.killpg(session.pid, signal.SIGINT)
        rest = session.stdout.read()
        assert session.wait(timeout=60) != 0
    assert "stopped the embedded PostgreSQL" in rest
    assert not _alive(pid)
    assert (data_dir / "PG_VERSION").exists()  # the data stays


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
