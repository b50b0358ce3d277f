"""What an attack of `bulwark attack` is, and the verdicts every attack shares.

An `Attack` owns its usage check (`unavailable`), its run (start the service afresh, attack it,
measure) and its targets, as `Check`s of a `Result` (suite.py, shared with `bulwark chaos`, so
both suites print and write the same table and JSON). The verdicts below are pure functions of
the figures, so they are tested without a server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from generator.harness.abuse.wire import Answer
from generator.harness.chaos.probe import Sample, percentile
from generator.harness.project import Project
from generator.harness.servers import RunningServer
from generator.harness.suite import Result

# Where each deployment target's files are; an attack on a config needs the config rendered.
TARGET_DIRS = {"nginx": "deploy/nginx", "kubernetes": "deploy/k8s", "systemd": "deploy/systemd"}
# An answer to an abusive request larger than this echoes what it was sent.
ANSWER_MAX_BYTES = 16 * 1024
# The event loop must never be held longer than 100 ms; the bounds a check can be set to are
# the loop monitor's own histogram buckets from there up.
LOOP_BOUNDS_S = (0.1, 0.25, 0.5, 1.0, 2.5)
# The per-address limit off: a flood from many addresses reaches the parsers, one from a single
# address would only be counting 429s.
UNLIMITED = {"RATE_LIMIT_DEFAULT": ""}


@dataclass(frozen=True, slots=True)
class Context:
    project: Project
    # DATABASE_URL of the migrated embedded database.
    db_env: dict[str, str]
    # The seeded item's route: what the legitimate clients read.
    item_path: str
    # The per-client limit the spoofing attacks run under (requests a minute).
    limit: int
    # Legitimate p99 under abuse may be this many times its unloaded p99.
    p99_factor: float
    # Seconds each attack phase lasts.
    window_s: float
    # The event loop is never held longer than this (one of LOOP_BOUNDS_S).
    loop_bound_s: float = LOOP_BOUNDS_S[0]
    # Where each service start's output is kept (`<dir>/<attacks it served>.log`), if anywhere.
    log_dir: Path | None = None

    def log(self, attacks: str) -> Path | None:
        return None if self.log_dir is None else self.log_dir / f"{attacks}.log"


@dataclass(frozen=True, slots=True)
class Attack:
    """One attack; subclasses implement `run`."""

    name: str
    description: str
    features: tuple[str, ...] = ()
    # Deployment targets whose rendered files the attack runs with.
    targets: tuple[str, ...] = ()

    def unavailable(self, project: Project) -> str | None:
        """Why `project` cannot be attacked this way, or None."""
        missing = [f for f in self.features if f not in project.features]
        missing += [t for t in self.targets if not (project.root / TARGET_DIRS[t]).is_dir()]
        if missing:
            return (
                f"attack {self.name} needs {', '.join(missing)}; "
                f"{project.root} was generated without them"
            )
        return None

    def settings(self, ctx: Context) -> dict[str, str]:
        """The service settings (no prefix) it attacks under. Attacks asking for the same
        settings, one after another, share one service start: starting the full service costs
        seconds, the attacks themselves leave nothing behind but counters read as deltas."""
        return dict(UNLIMITED)

    async def run(self, ctx: Context, server: RunningServer) -> Result:
        """Attack `server` (started with `settings`); the figures and their checks."""
        raise NotImplementedError


# --- verdicts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpoofCount:
    """How far one client got past a per-client limit by rewriting its forwarding headers."""

    sent: int
    # Answered by the app (anything but 429): the limiter let it through.
    admitted: int
    # Requests sent before the first 429; `sent` when none was refused.
    refused_from: int
    unanswered: int

    def over_limit(self, limit: int) -> int:
        return max(0, self.admitted - limit)

    def start_error(self, limit: int) -> int:
        """How far the first refusal is from the limit, early or late."""
        return abs(self.refused_from - limit)


def count_spoof(statuses: Sequence[int | None]) -> SpoofCount:
    """Read one client's answers, in the order sent, against its limit."""
    admitted = sum(1 for status in statuses if status is not None and status != 429)
    refused_from = next((i for i, status in enumerate(statuses) if status == 429), len(statuses))
    unanswered = sum(1 for status in statuses if status is None)
    return SpoofCount(len(statuses), admitted, refused_from, unanswered)


def check_spoofing(result: Result, counts: Mapping[str, SpoofCount], limit: int) -> None:
    """Every client held at the limit: none admitted past it, refusals starting at it ± 1."""
    result.equal(
        "admitted_over_limit",
        f"requests admitted over the limit of {limit}",
        sum(count.over_limit(limit) for count in counts.values()),
        0,
    )
    result.at_most(
        "refusal_start_error",
        "first 429 off the limit by (worst client)",
        max((count.start_error(limit) for count in counts.values()), default=0),
        1,
    )
    result.equal(
        "unanswered",
        "requests with no answer",
        sum(count.unanswered for count in counts.values()),
        0,
    )
    result.figures["clients"] = {
        name: {"sent": c.sent, "admitted": c.admitted, "refused_from": c.refused_from}
        for name, c in counts.items()
    }


def statuses(answers: Iterable[Answer]) -> dict[str, int]:
    """Answers by status ("none: <error>" when there was none), for the figures."""
    counted: dict[str, int] = {}
    for answer in answers:
        key = str(answer.status) if answer.status is not None else f"none: {answer.error}"
        counted[key] = counted.get(key, 0) + 1
    return dict(sorted(counted.items()))


def non_4xx(answers: Iterable[Answer]) -> int:
    """Answers that are not a refusal: a 2xx/3xx admitted the abuse, a 5xx broke on it.

    No answer at all (the server closed the connection) refuses too, and is not counted.
    """
    return sum(1 for a in answers if a.status is not None and not 400 <= a.status < 500)


def check_abusive(result: Result, key: str, what: str, answers: Sequence[Answer]) -> None:
    """Abusive requests refused with a 4xx (or a closed connection), in a bounded answer."""
    result.equal(f"{key}_non_4xx", f"{what}: answers not 4xx", non_4xx(answers), 0)
    result.at_most(
        f"{key}_largest_answer",
        f"{what}: largest answer",
        max((a.size for a in answers), default=0),
        ANSWER_MAX_BYTES,
        "B",
    )
    result.figures[f"{key}_sent"] = len(answers)
    result.figures[f"{key}_statuses"] = statuses(answers)


def check_legit(
    result: Result,
    key: str,
    baseline: Sequence[Sample],
    attacked: Sequence[Sample],
    *,
    factor: float | None,
) -> None:
    """Legitimate clients under attack: none failed; p99 within `factor` of the unloaded one
    (None: the p99s are figures only, e.g. on the app's own port, where no target is set)."""
    before = percentile((s.latency_ms for s in baseline), 99)
    during = percentile((s.latency_ms for s in attacked), 99)
    result.equal(
        f"{key}_failed", f"{key}: legitimate requests failed", sum(not s.ok for s in attacked), 0
    )
    if factor is not None:
        result.at_most(
            f"{key}_p99_ms",
            f"{key}: legitimate p99 under attack",
            round(during, 3),
            round(before * factor, 3),
            "ms",
        )
    result.figures[f"{key}_baseline_p99_ms"] = round(before, 3)
    result.figures[f"{key}_attacked_p99_ms"] = round(during, 3)
    result.figures[f"{key}_legit_requests"] = len(attacked)


def probe_queries_allowed(elapsed_s: float) -> int:
    """Database queries a probe flood may cause in `elapsed_s` with a one-second result cache:
    one refresh per started second, and one more for the second the window ends in."""
    return math.ceil(elapsed_s) + 1


def loop_blocks(before: Mapping[str, float], after: Mapping[str, float], bound_s: float) -> int:
    """Loop-monitor heartbeats later than `bound_s` (a bucket bound) between two readings of
    /metrics."""

    def over(sample: Mapping[str, float]) -> float:
        within = sample.get(f'event_loop_lag_seconds_bucket{{le="{bound_s}"}}', 0.0)
        return sample.get("event_loop_lag_seconds_count", 0.0) - within

    return round(over(after) - over(before))


def check_loop(
    result: Result, ctx: Context, before: Mapping[str, float], after: Mapping[str, float]
) -> None:
    result.equal(
        "loop_blocked",
        f"loop blocked > {ctx.loop_bound_s * 1000:g} ms (loop monitor)",
        loop_blocks(before, after, ctx.loop_bound_s),
        0,
    )
