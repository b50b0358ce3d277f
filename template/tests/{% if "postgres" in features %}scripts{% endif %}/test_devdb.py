"""The embedded PostgreSQL of `make dev` stops on `make db-stop`, even after a killed client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from devdb import stop_embedded

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
        client.send_signal(signal.SIGKILL)  # no atexit: pgserver keeps it registered
        client.wait()
    os.kill(command_pid, signal.SIGKILL)
    pid = _postmaster_pid(data_dir)
    assert _alive(pid)

    stop_embedded(data_dir)

    assert not _alive(pid)
    assert (data_dir / "PG_VERSION").exists()  # the data stays
