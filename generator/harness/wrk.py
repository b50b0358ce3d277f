"""Run wrk pinned to one core and read its text report.

wrk 4.x prints no machine-readable output without a Lua script, but its text report is stable;
the parser keys on the labelled lines and accepts every time unit wrk picks per magnitude.
`run_wrk` adds status.lua, which counts the answers by status: wrk's own report only says how
many were not 2xx/3xx, and a 429 or a 503 must not pass for throughput.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "sudo apt-get install -y wrk"
STATUS_SCRIPT = Path(__file__).with_name("status.lua")

# How often a running wrk reports progress back to the caller.
_TICK_S = 0.25
# Past the requested duration wrk still drains and prints; more than this means it is stuck.
_GRACE_S = 30.0

_TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_NUMBER = r"(\d+(?:\.\d+)?)"
_UNIT = r"(us|ms|s|m|h)\b"
_PERCENTILE = re.compile(rf"^\s*{_NUMBER}%\s+{_NUMBER}{_UNIT}", re.MULTILINE)
_REQUESTS = re.compile(rf"^\s*(\d+) requests in {_NUMBER}{_UNIT}", re.MULTILINE)
_RPS = re.compile(rf"^Requests/sec:\s+{_NUMBER}", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX_3XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_STATUS_MARKER = "BULWARK_STATUSES "
# The real-time round-robin priority a latency scenario may give wrk and its server: the
# lowest, ahead of every normal process and behind the kernel's own real-time threads.
REALTIME_PRIORITY = 1


class WrkError(RuntimeError):
    """wrk failed, ran past its bound, or printed no report this parser can read."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run; latencies in milliseconds, from wrk's `--latency` distribution."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeout_errors: int = 0
    non_2xx_3xx: int = 0
    # Answers by status and how many had an expected one, when status.lua counted them; the
    # latencies are then those of the expected answers (an upper bound, see status.lua).
    statuses: Mapping[int, int] = field(default_factory=dict)
    expected: int | None = None

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeout_errors

    @property
    def errors(self) -> int:
        """Everything that was not a 2xx/3xx answer: socket errors plus bad statuses."""
        return self.socket_errors + self.non_2xx_3xx

    @property
    def good(self) -> int:
        """Answers with an expected status (2xx/3xx when the statuses were not counted)."""
        return self.expected if self.expected is not None else self.requests - self.non_2xx_3xx

    @property
    def good_rps(self) -> float:
        """Throughput in expected answers only: a refusal is not served work."""
        return self.good / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def unexpected(self) -> int:
        """Answers with another status, plus requests that got no answer in time."""
        return self.requests - self.good + self.socket_errors

    @property
    def error_share(self) -> float:
        """`unexpected` as a share of every request sent."""
        sent = self.requests + self.connect_errors + self.read_errors + self.write_errors
        return self.unexpected / sent if sent else 1.0


def parse_wrk(text: str) -> WrkResult:
    """Read wrk's report; raise WrkError if a required line is missing.

    Requires `--latency` output: the mean latency wrk prints otherwise hides the tail.
    """
    percentiles = {
        float(pct): float(value) * _TO_MS[unit] for pct, value, unit in _PERCENTILE.findall(text)
    }
    requests = _REQUESTS.search(text)
    rps = _RPS.search(text)
    missing = [p for p in (50.0, 75.0, 90.0, 99.0) if p not in percentiles]
    if requests is None or rps is None or missing:
        raise WrkError(f"unreadable wrk report (run with --latency?):\n{text.strip()}")
    socket = _SOCKET_ERRORS.search(text)
    connect, read, write, timeout = (int(n) for n in socket.groups()) if socket else (0, 0, 0, 0)
    non_2xx = _NON_2XX_3XX.search(text)
    latencies = {f"p{p:.0f}_ms": percentiles[p] for p in (50.0, 75.0, 90.0, 99.0)}
    statuses: dict[int, int] = {}
    expected = None
    counted = next((ln for ln in text.splitlines() if ln.startswith(_STATUS_MARKER)), None)
    if counted is not None:
        figures = json.loads(counted.removeprefix(_STATUS_MARKER))
        statuses = {int(code): n for code, n in sorted(figures["statuses"].items())}
        expected = int(figures["expected"])
        if expected > 0:  # else no expected answer: -1 in the script, keep wrk's own
            latencies = {key: float(figures[key]) for key in latencies}
    return WrkResult(
        requests=int(requests.group(1)),
        duration_s=float(requests.group(2)) * _TO_MS[requests.group(3)] / 1e3,
        rps=float(rps.group(1)),
        **latencies,
        connect_errors=connect,
        read_errors=read,
        write_errors=write,
        timeout_errors=timeout,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        statuses=statuses,
        expected=expected,
    )


def wrk_command(
    url: str,
    *,
    duration_s: int,
    connections: int,
    cpu: int,
    threads: int = 1,
    script: Path | None = None,
    timeout_s: int | None = None,
    realtime: bool = False,
) -> list[str]:
    """One wrk thread on one pinned core: the server gets the other core to itself.

    A Lua `script` that times each request needs one connection per thread (`threads`).
    `timeout_s` replaces wrk's 2 s, past which it counts an unanswered request as an error
    again every 2 s. `realtime` runs wrk's threads in SCHED_RR at REALTIME_PRIORITY (chrt,
    which needs CAP_SYS_NICE): no normal process on its core then delays their wake-ups.
    """
    return [
        *(["chrt", "--rr", str(REALTIME_PRIORITY)] if realtime else []),
        "taskset",
        "-c",
        str(cpu),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        *(["--timeout", f"{timeout_s}s"] if timeout_s is not None else []),
        *(["-s", str(script)] if script is not None else []),
        url,
    ]


def run_wrk(
    url: str,
    *,
    duration_s: int,
    connections: int,
    cpu: int,
    tick: Callable[[float], None] | None = None,
    expect: Collection[int] = (200,),
    realtime: bool = False,
) -> WrkResult:
    """Run wrk to completion, calling `tick(elapsed_s)` a few times a second for progress.

    Answers are counted by status; those in `expect` are the good ones (`WrkResult.good`);
    `realtime` as in `wrk_command`.
    wrk takes whole seconds (`-d2.5s` runs 2 s), hence the int. wrk is killed if it outlives
    the duration by `_GRACE_S`, or if this call is interrupted.
    """
    command = wrk_command(
        url,
        duration_s=duration_s,
        connections=connections,
        cpu=cpu,
        script=STATUS_SCRIPT,
        realtime=realtime,
    )
    env = {**os.environ, "BULWARK_EXPECT": ",".join(map(str, sorted(expect)))}
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=_TICK_S)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if elapsed > duration_s + _GRACE_S:
                    raise WrkError(f"wrk still running after {elapsed:.0f} s: {url}") from None
                if tick is not None:
                    tick(min(elapsed, duration_s))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with {proc.returncode}: {(stderr or stdout).strip()}")
    return parse_wrk(stdout)


def wrk_version() -> str:
    """wrk's banner line, e.g. `wrk debian/4.1.0-3+b2 [epoll]` (`wrk -v` exits 1 by design)."""
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    first_line = (out.stdout or out.stderr).strip().splitlines()[0]
    return first_line.split(" Copyright")[0].strip()
