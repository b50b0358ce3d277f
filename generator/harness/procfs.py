"""What the harness reads about running processes from /proc: CPU time, children, sockets.

Parsed by hand: a few fields of kernel lines need no library (psutil is not a dependency of
the harness).
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

_TCP_ESTABLISHED = "01"


def stat_cpu_s(stat: str, ticks_per_s: int | None = None) -> float:
    """utime + stime from the text of /proc/PID/stat, in seconds.

    The command name (field 2) is in parentheses and may hold spaces or ')', so fields are
    counted after the last ')', where utime and stime (14, 15) are the 12th and 13th.
    """
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / (ticks_per_s or os.sysconf("SC_CLK_TCK"))


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, every thread's included, in seconds."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat").read_text(encoding="ascii"))


def children(pid: int) -> list[int]:
    """The direct children of a process (every thread's), [] when it has none or is gone."""
    found: list[int] = []
    with suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with suppress(OSError):  # a thread that exited while listed
                found.extend(map(int, (task / "children").read_text().split()))
    return found


def tree_cpu_s(pid: int) -> float:
    """utime + stime of a process and all its live descendants, in seconds.

    What a server costs whatever its shape: uvicorn's supervisor and its workers, nginx's
    master and workers. A process that exits between two readings takes its share with it,
    so this suits servers that keep their processes through a run.
    """
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        with suppress(OSError, IndexError, ValueError):  # exited while walked
            total += process_cpu_s(current)
            pending.extend(children(current))
    return total


def threads_cpu_s(pid: int) -> float:
    """Time on CPU of the process's live threads, in seconds, to the nanosecond.

    /proc/PID/stat counts 10 ms ticks, ±0.05 % of a core over 20 s: too coarse for a 0.2 %
    cost. Each thread's schedstat (its first field: ns on CPU) is exact, but a thread that
    exits between two readings is lost, so this suits idle windows, not loaded runs.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(FileNotFoundError):  # a thread that exited while listed
            total += int((task / "schedstat").read_text(encoding="ascii").split()[0])
    return total / 1e9


def worker_pids(supervisor: int) -> list[int]:
    """uvicorn's worker processes under `supervisor` (multiprocessing spawn children, not its
    resource tracker); [] when it has none or is gone."""
    try:
        listed = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text()
    except OSError:
        return []
    workers = []
    for pid in map(int, listed.split()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            workers.append(pid)
    return sorted(workers)


def established_connections(pid: int, port: int) -> int:
    """Client connections to `port` that process `pid` holds open (ESTABLISHED, IPv4)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return 0
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return 0
    count = 0
    for line in table:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == _TCP_ESTABLISHED and fields[9] in inodes:
            count += 1
    return count
