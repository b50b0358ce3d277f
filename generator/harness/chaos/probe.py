"""What `bulwark chaos` measures with: a paced async probe client, and wrk in the background.

wrk supplies the load but reports one summary per run; the probe records every answer it gets
(status and latency, on the run's own clock), so a figure can be read for any window: while
Postgres is down, after it is back, during a drain.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import httpx

from generator.harness import wrk

# A lane sends its next request this long after the previous one was sent (or at once when
# that one took longer): ~50 requests a second per lane, a sample every 20 ms of the timeline.
PROBE_INTERVAL_S = 0.02
# wrk runs until stopped; its -d is only a bound in case the harness itself dies.
_WRK_BOUND_S = 3600
_WRK_STOP_TIMEOUT_S = 30.0
_BODY_CHARS = 120


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe request; times in seconds since the scenario's clock zero."""

    lane: str
    sent_s: float
    latency_ms: float
    # None: no HTTP answer at all (refused, reset, timed out): `error` names what happened.
    status: int | None
    error: str = ""
    # The start of the body of a non-2xx answer, to tell who refused (breaker or pool).
    body: str = ""
    # The service's own time for it (its X-Response-Time header, with the metrics feature):
    # the latency minus the wait in the socket backlog and the loop's queue.
    server_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Probe:
    """Lanes of sequential GETs on keep-alive connections, each answer kept as a `Sample`.

    A lane never has more than one request in flight, so a request that hangs shows as one
    long latency rather than a pile-up; `stop_issuing()` lets the requests in flight finish.
    """

    def __init__(
        self,
        base_url: str,
        lanes: Sequence[tuple[str, str]],
        *,
        zero: float,
        timeout_s: float,
        interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self.base_url = base_url
        self.lanes = tuple(lanes)
        self.zero = zero
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._issuing = True

    def stop_issuing(self) -> None:
        self._issuing = False

    def select(
        self, lane: str, start_s: float = -math.inf, end_s: float = math.inf
    ) -> list[Sample]:
        """The lane's samples sent in [start_s, end_s)."""
        return [s for s in self.samples if s.lane == lane and start_s <= s.sent_s < end_s]

    async def run(self) -> None:
        count = len(self.lanes)
        client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.timeout_s,
            # Loopback only: a proxy from the environment must not carry the probes.
            trust_env=False,
            limits=httpx.Limits(max_connections=count, max_keepalive_connections=count),
        )
        async with client, asyncio.TaskGroup() as group:
            for lane, path in self.lanes:
                group.create_task(self._lane(client, lane, path))

    async def _lane(self, client: httpx.AsyncClient, lane: str, path: str) -> None:
        while self._issuing:
            started = time.monotonic()
            status: int | None = None
            server_ms: float | None = None
            error = body = ""
            try:
                response = await client.get(path)
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            else:
                status = response.status_code
                if not 200 <= status < 300:
                    body = response.text[:_BODY_CHARS]
                server_ms = _milliseconds(response.headers.get("x-response-time"))
            latency_s = time.monotonic() - started
            self.samples.append(
                Sample(
                    lane, started - self.zero, latency_s * 1000.0, status, error, body, server_ms
                )
            )
            await asyncio.sleep(max(self.interval_s - latency_s, 0.0))


def _milliseconds(header: str | None) -> float | None:
    """`0.57ms` -> 0.57; None when absent or unreadable."""
    if header is None or not header.endswith("ms"):
        return None
    try:
        return float(header[:-2])
    except ValueError:
        return None


@asynccontextmanager
async def probing(probe: Probe) -> AsyncIterator[Probe]:
    """Run `probe` for the block; on exit stop issuing and wait for the requests in flight."""
    task = asyncio.create_task(probe.run())
    try:
        yield probe
    finally:
        probe.stop_issuing()
        with suppress(TimeoutError):
            await asyncio.wait_for(task, timeout=probe.timeout_s + 5.0)


class BackgroundWrk:
    """wrk on a pinned core until `stop()`: SIGINT makes wrk stop and print its report."""

    def __init__(
        self, url: str, *, connections: int, cpu: int, timeout_s: int | None = None
    ) -> None:
        self.command = wrk.wrk_command(
            url, duration_s=_WRK_BOUND_S, connections=connections, cpu=cpu, timeout_s=timeout_s
        )
        self._process: asyncio.subprocess.Process | None = None
        self.result: wrk.WrkResult | None = None

    async def __aenter__(self) -> BackgroundWrk:
        self._process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def stop(self) -> wrk.WrkResult:
        """Stop wrk now (once); its report covers everything since it started."""
        if self.result is not None:
            return self.result
        process = self._process
        if process is None:
            raise wrk.WrkError("wrk was never started")
        if process.returncode is None:
            # taskset execs wrk, so the signal reaches wrk itself.
            process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = await asyncio.wait_for(
                process.communicate(), timeout=_WRK_STOP_TIMEOUT_S
            )
        except TimeoutError:
            raise wrk.WrkError("wrk did not stop within 30 s of SIGINT") from None
        text = stdout.decode(errors="replace")
        if "requests in" not in text:
            raise wrk.WrkError(f"wrk printed no report: {stderr.decode(errors='replace')}")
        self.result = wrk.parse_wrk(text)
        return self.result

    async def __aexit__(self, *exc_info: object) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def percentile(values: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values (the count says whether there were any)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(math.ceil(pct / 100.0 * len(ordered)), 1)
    return ordered[rank - 1]


def recovered_at(samples: Sequence[Sample], since_s: float) -> float | None:
    """When the answers turned good for good: the send time of the first of the unbroken
    run of 2xx answers that ends the list, counting only samples sent from `since_s`;
    None when the last answer is still bad (or there is none)."""
    after = sorted((s for s in samples if s.sent_s >= since_s), key=lambda s: s.sent_s)
    if not after or not after[-1].ok:
        return None
    start = after[-1].sent_s
    for sample in reversed(after):
        if not sample.ok:
            break
        start = sample.sent_s
    return start


def timeline(samples: Sequence[Sample], bucket_s: float = 0.5) -> list[dict[str, object]]:
    """Per lane and per `bucket_s` of send time: count, bad answers, p50/p99/max latency."""
    buckets: dict[tuple[str, int], list[Sample]] = {}
    for sample in samples:
        buckets.setdefault((sample.lane, math.floor(sample.sent_s / bucket_s)), []).append(sample)
    rows: list[dict[str, object]] = []
    for (lane, index), group in sorted(buckets.items()):
        latencies = [s.latency_ms for s in group]
        statuses: dict[str, int] = {}
        for s in group:
            key = str(s.status) if s.status is not None else (s.error or "error")
            statuses[key] = statuses.get(key, 0) + 1
        rows.append(
            {
                "lane": lane,
                "t_s": round(index * bucket_s, 3),
                "count": len(group),
                "bad": sum(not s.ok for s in group),
                "statuses": statuses,
                "p50_ms": round(percentile(latencies, 50), 3),
                "p99_ms": round(percentile(latencies, 99), 3),
                "max_ms": round(max(latencies), 3),
            }
        )
    return rows
