"""The `db-read-batched` scenario of `bulwark loadtest`: item reads batched across requests.

db-read's load (one seeded item by id, the item cache off) on three servers up at once, their
runs alternated: bare FastAPI + asyncpg (db-read's baseline), the service with
`DB_BATCH_READS=true`, and the same service with it off. The ratio is batched / bare; its own
figures say what batching gains over the unbatched path and whether it costs tail latency
(the batched p99 must not exceed the unbatched one's, pair by pair).

Every request reads the same id (wrk sends one URL), so each batch is one key however many
requests joined it: the measure of one round trip and one pool checkout shared by many
requests, the coalescing of concurrent reads of a hot row.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from typing import Any

from generator.harness import apps, servers
from generator.harness.load.data import ItemRead
from generator.harness.load.scenario import (
    MAX_ERROR_SHARE,
    Bench,
    Outcome,
    Side,
    Verdict,
    pair_ratios,
    spread,
)

UNBATCHED = "unbatched"
TARGET_RATIO = 1.5
TABLE_TITLE = "db-read-batched: each side's median run"
# Item reads reach PostgreSQL on every side: the item cache, where there is one, is off.
UNCACHED = (("CACHE_ITEMS_TTL_S", "0"),)


@dataclass(frozen=True, slots=True)
class BatchedRead(ItemRead):
    """db-read with batching on against bare FastAPI, the unbatched service alternated beside
    them (`unbatched_settings` name its settings, without the prefix)."""

    unbatched_settings: tuple[tuple[str, str], ...] = (*UNCACHED, ("DB_BATCH_READS", "false"))

    def measure(self, bench: Bench) -> Outcome:
        """The three servers up at once, one run of each in turn, a discarded warm-up first:
        the machine's drift lands on all three alike (see `Scenario.measure`)."""
        path = self.prepare(bench)
        with ExitStack() as stack:
            unbatched_env = bench.service_env(self.unbatched_settings)
            targets = {
                "baseline": stack.enter_context(self.baseline_server(bench)),
                "service": stack.enter_context(self.service_server(bench)),
                UNBATCHED: stack.enter_context(
                    servers.service(
                        bench.project, unbatched_env, workers=self.workers, name=UNBATCHED
                    )
                ),
            }
            measured = self.alternate(targets, path, bench)
        baseline, service, unbatched = (measured[s] for s in ("baseline", "service", UNBATCHED))
        return Outcome(
            replace(self, path=path),
            baseline,
            service,
            unbatched_figures(baseline, service, unbatched),
        )

    def failure(self, outcome: Outcome, bench: Bench) -> str | None:
        """The main pair's failure, or the unbatched side's share of unexpected answers with
        what they were and their likely cause."""
        problems = [ItemRead.failure(self, outcome, bench)]  # slots: no zero-argument super()
        extra = outcome.extra
        share = extra.get("unbatched_error_share", 0.0)
        if share > MAX_ERROR_SHARE:
            other = {
                int(status): n
                for status, n in extra["unbatched_statuses"].items()
                if int(status) not in self.expect
            }
            sockets = extra["unbatched_socket_errors"]
            shown = ", ".join(
                [f"{n:,} x {status}" for status, n in other.items()]
                + [f"{n:,} {kind} errors" for kind, n in sockets.items() if n]
            )
            expected = "/".join(map(str, self.expect))
            problem = f"{UNBATCHED}: {share:.1%} of answers were not {expected} ({shown})"
            cause = self.cause(other, sockets, bench)
            problems.append(f"{problem}; {cause}" if cause else problem)
        return "; ".join(p for p in problems if p) or None

    def verdict(self, entry: Mapping[str, Any]) -> Verdict:
        if entry.get("failed"):
            return Verdict(f"failed: {entry['failed']}", False)
        ratio, p99 = entry["ratio"], entry.get("p99_over_unbatched", {}).get("median")
        if ratio is None or p99 is None:
            return Verdict("failed: no ratio", False)
        return Verdict(
            f"rps / bare ≥ {TARGET_RATIO:g}, p99 ≤ the unbatched service's",
            ratio >= TARGET_RATIO and p99 <= 1.0,
        )

    def tables(self, entry: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
        def row(side: str, prefix: str) -> dict[str, str]:
            cpu = entry.get(f"{prefix}cpu_us_per_request")
            return {
                "side": side,
                "rps": f"{entry[f'{prefix}rps']:,.0f}",
                "p50 ms": f"{entry[f'{prefix}p50_ms']:.2f}",
                "p99 ms": f"{entry[f'{prefix}p99_ms']:.2f}",
                "CPU µs/req": "-" if cpu is None else f"{cpu:.0f}",
            }

        if UNBATCHED + "_rps" not in entry:
            return {}
        return {
            TABLE_TITLE: [
                row("bare FastAPI + asyncpg", "baseline_"),
                row("service, batched", ""),
                row("service, unbatched", f"{UNBATCHED}_"),
            ]
        }


def unbatched_figures(baseline: Side, batched: Side, unbatched: Side) -> dict[str, Any]:
    """The unbatched side's figures, and pair by pair: batched / unbatched rps and p99 (≤ 1
    when batching costs no tail latency), unbatched / bare rps."""
    median = unbatched.median
    figures: dict[str, Any] = {
        "unbatched_rps": round(median.good_rps, 2),
        "unbatched_p50_ms": round(median.p50_ms, 3),
        "unbatched_p99_ms": round(median.p99_ms, 3),
        "unbatched_errors": unbatched.errors,
        "unbatched_error_share": round(unbatched.error_share, 6),
        "unbatched_statuses": {str(status): n for status, n in unbatched.statuses.items()},
        "unbatched_socket_errors": {
            kind: sum(getattr(run, f"{kind}_errors") for run in unbatched.runs)
            for kind in ("connect", "read", "write", "timeout")
        },
        "unbatched_cpu_us_per_request": (
            None if unbatched.cpu_us is None else round(unbatched.cpu_us, 2)
        ),
    }
    if any(run.good_rps <= 0 or run.p99_ms <= 0 for run in unbatched.runs):
        return figures  # the unbatched side failed: `failure` says so, no ratio to draw
    return figures | {
        "rps_over_unbatched": spread(pair_ratios(unbatched.runs, batched.runs)),
        "p99_over_unbatched": spread(
            [b.p99_ms / u.p99_ms for u, b in zip(unbatched.runs, batched.runs, strict=True)]
        ),
        "unbatched_over_bare": spread(pair_ratios(baseline.runs, unbatched.runs)),
        "unbatched_runs": [asdict(run) for run in unbatched.runs],
    }


DB_READ_BATCHED = BatchedRead(
    "db-read-batched",
    "db-read with item reads batched across requests vs bare FastAPI + asyncpg; "
    "the unbatched service alternated beside them",
    "/items/{item_id}",
    features=("postgres",),
    baseline_app=apps.BASELINE_DB,
    service_settings=(*UNCACHED, ("DB_BATCH_READS", "true")),
    target_ratio=TARGET_RATIO,
    target_wording="rps / bare rps",
)
