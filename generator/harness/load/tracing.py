"""The `tracing` scenario of `bulwark loadtest`: tracing on against the same service with it off.

The off side is the generated service itself with `OTEL_SDK_DISABLED=true` (the standard switch:
no provider, no span, no query wrapper); it stays up the whole scenario. Each variant, the same
service with tracing on, runs beside it in turn:

- `default`: the default sampling ratio, spans exported to an OTLP/HTTP receiver the harness
  runs (on the wrk core, so its work is not the server's), so batches are really encoded and
  sent: the judged variant.
- `collector-down`: the same with the endpoint on a port nothing listens on, as when the
  collector is absent: exports fail, spans are dropped and counted.
- `100%`: every request recorded and exported: report only.
- `1%`: one new trace in a hundred recorded and exported, the price of raising the default:
  report only.

Each variant is loaded on `/health` and, with postgres, on one item read (db-read's route, item
cache off). The two sides are loaded at the same moments, one wrk each, because the difference
at stake (5 %) is far inside the drift of alternated runs on a shared machine: both servers
share the server core, so whatever slows the machine slows both, and their rps ratio is the
CPU-per-request ratio of the two. Each side's server CPU per answer is read over the same runs.
"""

from __future__ import annotations

import secrets
import statistics
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from generator.harness import servers, wrk
from generator.harness.load.scenario import (
    WARMUP_S,
    Bench,
    Outcome,
    Scenario,
    Side,
    Verdict,
    cpu_us_per_request,
    spread,
    with_failures,
)
from generator.harness.machine import WRK_CPU
from generator.harness.project import ServiceError, seed_item

TARGET = 0.95
# The report's name for the grey side, so nobody reads it as bare FastAPI.
BASELINE = "service, OTEL_SDK_DISABLED=true"
TABLE_TITLE = "tracing on / tracing off, both loaded at once"
_TOKEN = secrets.token_hex(16)
# Every side: the item read goes to PostgreSQL (db-read's setting) and /health/detailed is ours.
COMMON_SETTINGS = (("CACHE_ITEMS_TTL_S", "0"), ("HEALTH_DETAILED_TOKEN", _TOKEN))
OFF_ENV = {"OTEL_SDK_DISABLED": "true"}


@dataclass(frozen=True, slots=True)
class Variant:
    """Tracing on, exporting to the harness's receiver (`collector_up`) or to a closed port;
    `sample_ratio` None keeps the service's default; `judged` variants carry the target."""

    name: str
    how: str
    sample_ratio: float | None = None
    collector_up: bool = True
    judged: bool = False


VARIANTS = (
    Variant("default", "default sampling, exported to the harness's OTLP receiver", judged=True),
    Variant(
        "collector-down",
        "default sampling, the endpoint a closed port (spans dropped, counted)",
        collector_up=False,
    ),
    Variant("100%", "every request recorded, exported to the receiver", sample_ratio=1.0),
    Variant("1%", "one new trace in a hundred recorded, exported", sample_ratio=0.01),
)


@dataclass(frozen=True, slots=True)
class Load:
    """One path both sides are loaded on; `feature` is what the project needs for it."""

    name: str
    path: str
    feature: str | None = None


LOADS = (Load("/health", "/health"), Load("db-read", "/items/{item_id}", "postgres"))


def plan(features: Sequence[str]) -> list[Load]:
    """The loads a project with `features` is measured on, in order."""
    return [load for load in LOADS if load.feature is None or load.feature in features]


class Receiver:
    """A minimal OTLP/HTTP traces endpoint: accepts every export (200, an empty
    ExportTraceServiceResponse) and counts them. Hand-written: the harness needs no collector
    binary, only a peer that really reads each batch."""

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.exports += 1
                    receiver.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.exports, self.bytes

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver")
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()


def variant_settings(variant: Variant, endpoint: str) -> tuple[tuple[str, str], ...]:
    """The service settings (without prefix) of a variant's side."""
    ratio = (
        ()
        if variant.sample_ratio is None
        else (("TRACING_SAMPLE_RATIO", f"{variant.sample_ratio:g}"),)
    )
    return (
        *COMMON_SETTINGS,
        ("TRACING_ENABLED", "true"),
        ("TRACING_OTLP_ENDPOINT", endpoint),
        *ratio,
    )


def detailed(server: servers.RunningServer) -> dict[str, Any]:
    """The server's /health/detailed resources, asked with the harness's token."""
    document = servers.fetch_json(
        server, "/health/detailed", headers={"Authorization": f"Bearer {_TOKEN}"}
    )
    if not isinstance(document, dict) or not isinstance(document.get("resources"), dict):
        raise ServiceError(f"{server.name}: /health/detailed has no resources: {document!r}")
    resources: dict[str, Any] = document["resources"]
    return resources


def check_sides(
    off: Mapping[str, Any], on: Mapping[str, Any], variant: Variant, endpoint: str
) -> str:
    """The variant side's sampler, checked before its runs; raises ServiceError if either side
    runs the wrong thing (the off side tracing, the on side not, or to another endpoint or
    ratio), since its figures would then compare the wrong things."""
    if "tracing" in off:
        raise ServiceError("tracing: the OTEL_SDK_DISABLED side still runs tracing")
    tracing = on.get("tracing")
    if tracing is None:
        raise ServiceError(
            f"tracing: the {variant.name} side runs no tracing (OTEL_SDK_DISABLED in the "
            "harness's environment?)"
        )
    if tracing["endpoint"] != endpoint:
        raise ServiceError(
            f"tracing: the {variant.name} side exports to {tracing['endpoint']}, not {endpoint} "
            "(an OTEL_EXPORTER_OTLP_* variable in the harness's environment?)"
        )
    sampler = str(tracing["sampler"])
    if variant.sample_ratio is not None and not sampler.endswith(f" {variant.sample_ratio}"):
        raise ServiceError(
            f"tracing: the {variant.name} side samples with {sampler}, not "
            f"{variant.sample_ratio} (OTEL_TRACES_SAMPLER in the harness's environment?)"
        )
    return sampler


def row_for(variant: Variant, load: Load, sampler: str, off: Side, on: Side) -> dict[str, Any]:
    """One row: the variant's ratios against the off side over the same runs."""
    off_us = cpu_us_per_request(off.runs, off.cpu_s)
    on_us = cpu_us_per_request(on.runs, on.cpu_s)
    row = {
        "variant": variant.name,
        "load": load.name,
        "how": variant.how,
        "sampler": sampler,
        "judged": variant.judged,
        "rps_on": round(statistics.median(r.good_rps for r in on.runs), 1),
        "rps_off": round(statistics.median(r.good_rps for r in off.runs), 1),
        "rps_on_over_off": spread(
            [n.good_rps / f.good_rps for f, n in zip(off.runs, on.runs, strict=True)]
        ),
        "cpu_us_on": round(statistics.median(on_us), 1),
        "cpu_us_off": round(statistics.median(off_us), 1),
        # off / on: "throughput per CPU with tracing on, as a share of off", like rps.
        "cpu_off_over_on": spread([f / n for f, n in zip(off_us, on_us, strict=True)]),
        "p99_ms_on": round(on.median.p99_ms, 2),
        "p99_ms_off": round(off.median.p99_ms, 2),
        "error_share_on": round(on.error_share, 6),
        "error_share_off": round(off.error_share, 6),
    }
    return with_failures(row, {"tracing-on": on, "tracing-off": off})


@dataclass(frozen=True, slots=True)
class Tracing(Scenario):
    """Tracing on (each of VARIANTS) against off, on each load of `plan`, loaded at once."""

    def measure(self, bench: Bench) -> Outcome:
        loads = plan(bench.project.features)
        paths = {
            load.name: load.path.format(item_id=seed_item(bench.project, bench.env))
            if "{item_id}" in load.path
            else load.path
            for load in loads
        }
        receiver = Receiver()
        closed = f"http://127.0.0.1:{servers.free_port()}/v1/traces"  # nothing listens there
        rows: list[dict[str, Any]] = []
        main: tuple[Side, Side] | None = None
        with ExitStack() as stack:
            stack.enter_context(receiver.running())
            off_env = {**bench.service_env(COMMON_SETTINGS), **OFF_ENV}
            off = stack.enter_context(
                servers.service(bench.project, off_env, workers=self.workers, name="off")
            )
            for variant in VARIANTS:
                endpoint = receiver.endpoint if variant.collector_up else closed
                env = bench.service_env(variant_settings(variant, endpoint))
                with self._on_server(bench, env, variant) as on:
                    sampler = check_sides(detailed(off), detailed(on), variant, endpoint)
                    for load in loads:
                        before, received = detailed(on)["tracing"], receiver.counts()
                        off_side, on_side = at_once(
                            bench, self, off, on, paths[load.name], f"{variant.name} {load.name}"
                        )
                        if main is None:
                            main = (off_side, on_side)
                        exports, sent = (
                            a - b for a, b in zip(receiver.counts(), received, strict=True)
                        )
                        rows.append(
                            row_for(variant, load, sampler, off_side, on_side)
                            | span_counts(detailed(on)["tracing"], before)
                            | {"receiver_exports": exports, "receiver_bytes": sent}
                        )
        if main is None:  # every project has /health
            raise ServiceError("tracing: no load was measured")
        return Outcome(self, main[0], main[1], extra={"baseline": BASELINE, "tracing": rows})

    def _on_server(
        self, bench: Bench, env: Mapping[str, str], variant: Variant
    ) -> AbstractContextManager[servers.RunningServer]:
        return servers.service(bench.project, env, workers=self.workers, name=f"on-{variant.name}")

    def failure(self, outcome: Outcome, bench: Bench) -> str | None:
        """The main pair's failure, or any row's with too many unexpected answers."""
        problems = [Scenario.failure(self, outcome, bench)]  # slots: no zero-argument super()
        problems += [
            f"{row['variant']} {row['load']}: {row['failed']}"
            for row in outcome.extra.get("tracing", ())
            if row.get("failed")
        ]
        return "; ".join(p for p in problems if p) or None

    def verdict(self, entry: Mapping[str, Any]) -> Verdict:
        if entry.get("failed"):
            return Verdict(f"failed: {entry['failed']}", False)
        judged = [row for row in entry.get("tracing", ()) if row["judged"]]
        return Verdict(
            f"default sampling: rps and CPU/request ≥ {TARGET:g} x tracing off "
            "(pair medians, loaded at once), /health and db-read; 100 % report only",
            bool(judged)
            and all(
                row["rps_on_over_off"]["median"] >= TARGET
                and row["cpu_off_over_on"]["median"] >= TARGET
                for row in judged
            ),
        )

    def tables(self, entry: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
        return {TABLE_TITLE: table_rows(entry.get("tracing", ()))}


def span_counts(after: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, int]:
    """The variant side's spans exported and dropped over its runs (its /health/detailed)."""
    dropped_after, dropped_before = after["dropped"], before["dropped"]
    return {
        "spans_exported": after["exported"] - before["exported"],
        "spans_dropped_queue_full": dropped_after["queue_full"] - dropped_before["queue_full"],
        "spans_dropped_export_failed": dropped_after["export_failed"]
        - dropped_before["export_failed"],
    }


def at_once(
    bench: Bench,
    scenario: Scenario,
    off: servers.RunningServer,
    on: servers.RunningServer,
    path: str,
    label: str,
) -> tuple[Side, Side]:
    """Both sides loaded in the same moments, one wrk each on the wrk core, a discarded
    warm-up and then the measured runs; the wrk started first alternates. Each side's CPU is
    read around its own run."""
    runs = bench.runs(scenario)
    progress = bench.progress
    task = progress.add_task(
        f"{'tracing':<12} {label:<22}", total=WARMUP_S + runs * bench.seconds, figure=""
    )
    targets = {"off": off, "on": on}
    results: dict[str, list[wrk.WrkResult]] = {side: [] for side in targets}
    cpu_s: dict[str, list[float]] = {side: [] for side in targets}
    for index in range(runs + 1):  # the warm-up first, discarded
        length = WARMUP_S if index == 0 else bench.seconds
        order = ("off", "on") if index % 2 else ("on", "off")
        before = {side: targets[side].cpu_s() for side in order}
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                side: pool.submit(
                    wrk.run_wrk,
                    targets[side].url(path),
                    duration_s=length,
                    connections=bench.connections,
                    cpu=WRK_CPU,
                    expect=scenario.expect,
                )
                for side in order
            }
            done = {side: future.result() for side, future in futures.items()}
        spent = {side: targets[side].cpu_s() - before[side] for side in order}
        for server in targets.values():
            server.check_alive()
        if done["off"].good_rps <= 0:
            got = done["off"]
            raise ServiceError(
                f"tracing: the off side answered nothing on {path} in {got.requests:,} "
                f"requests (statuses {dict(got.statuses)}, {got.socket_errors:,} socket errors)"
            )
        progress.update(
            task,
            advance=length,
            figure=f"on/off {done['on'].good_rps / done['off'].good_rps:.3f}",
        )
        if index > 0:
            for side in targets:
                results[side].append(done[side])
                cpu_s[side].append(spent[side])
    off_side, on_side = (Side(tuple(results[s]), tuple(cpu_s[s])) for s in ("off", "on"))
    return off_side, on_side


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The rows as text columns: how the terminal and the report page show them; a row with
    too many unexpected answers shows no figure."""

    def shown(figure: Mapping[str, float]) -> str:
        return f"{figure['median']:.3f} ({figure['min']:.3f}-{figure['max']:.3f})"

    return [
        {
            "tracing": row["variant"] + (" (judged)" if row["judged"] else ""),
            "load": row["load"],
            "rps on / off": "failed" if row.get("failed") else shown(row["rps_on_over_off"]),
            "CPU off / on": "failed" if row.get("failed") else shown(row["cpu_off_over_on"]),
            "CPU µs/req on": f"{row['cpu_us_on']:.0f}",
            "CPU µs/req off": f"{row['cpu_us_off']:.0f}",
            "rps on": f"{row['rps_on']:,.0f}",
            "rps off": f"{row['rps_off']:,.0f}",
            "spans exported": f"{row['spans_exported']:,}",
            "dropped": f"{row['spans_dropped_queue_full'] + row['spans_dropped_export_failed']:,}",
            "how": row["how"],
        }
        for row in rows
    ]


TRACING = Tracing(
    "tracing",
    "the service with tracing on (default sampling, collector up and down; 100 %) vs the same "
    "service with OTEL_SDK_DISABLED=true",
    "/health",
    features=("tracing",),
)
