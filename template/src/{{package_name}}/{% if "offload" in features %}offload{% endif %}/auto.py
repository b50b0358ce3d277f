"""Where an `@offload.auto` function runs: decided from the CPU share of its recent calls.

Each call reports its wall time and its worker thread's CPU time (measured in the worker, so the
loop pays nothing). Until `samples` calls are in, the function runs on threads; then a CPU share
(CPU time / wall time over the last `samples` calls) at or above `cpu_share`, with at least
`min_cpu_ms` of CPU a call, sends it to the process pool, anything less keeps it on threads. The
decision is made again every `recheck_calls` calls or `recheck_s` seconds, from the latest
samples, wherever they ran: a workload that changes is moved. Clock: `time.monotonic()` unless
given. A call that raised, or whose caller was cancelled, adds no sample. Everything here runs
on the event loop's thread, in O(samples) per decision.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from ..observability.stats import Family

PoolName = Literal["thread", "process"]
# Why a CPU-bound call ran on threads: the worker could not import the function by name, or
# the call's arguments did not pickle.
Fallback = Literal["unpicklable_function", "unpicklable_arguments"]


@dataclass(frozen=True, slots=True)
class AutoPolicy:
    """How `@offload.auto` measures and decides (the OFFLOAD_AUTO_* settings)."""

    samples: int
    cpu_share: float
    min_cpu_ms: float
    recheck_calls: int
    recheck_s: float

    def __post_init__(self) -> None:
        if self.samples < 1 or self.recheck_calls < 1:
            raise ValueError(f"samples and recheck_calls must be >= 1, got {self}")
        if not 0 < self.cpu_share <= 1 or self.min_cpu_ms < 0 or self.recheck_s <= 0:
            raise ValueError(
                f"expected 0 < cpu_share <= 1, min_cpu_ms >= 0, recheck_s > 0; got {self}"
            )


class AutoFunction:
    """One auto function's recent samples and the pool its calls go to now."""

    def __init__(
        self,
        policy: AutoPolicy,
        importable: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._importable = importable
        self._clock = clock
        self._window: deque[tuple[float, float]] = deque(maxlen=policy.samples)
        self._since_decision = 0
        self._decided_at: float | None = None
        self._sendable: bool | None = None  # whether a process worker can import it: asked once
        self.pool: PoolName = "thread"  # where it is measured until decided
        self.cpu_bound = False
        self.cpu_share: float | None = None
        self.calls = 0
        self.decisions: Counter[PoolName] = Counter()
        self.fallbacks: Counter[Fallback] = Counter()

    def route(self) -> PoolName:
        """The pool for the next call; a CPU-bound function the worker cannot import: threads."""
        if self.cpu_bound and self.pool == "thread":
            self.fallbacks["unpicklable_function"] += 1
        return self.pool

    def fell_back(self, reason: Fallback) -> None:
        self.fallbacks[reason] += 1

    def record(self, wall_s: float, cpu_s: float) -> None:
        """Count one finished call's times, and decide again when one is due."""
        self.calls += 1
        self._since_decision += 1
        self._window.append((wall_s, cpu_s))
        if len(self._window) < self._policy.samples:
            return
        if (
            self._decided_at is None
            or self._since_decision >= self._policy.recheck_calls
            or self._clock() - self._decided_at >= self._policy.recheck_s
        ):
            self._decide()

    def _decide(self) -> None:
        wall = sum(sample[0] for sample in self._window)
        cpu = sum(sample[1] for sample in self._window)
        self.cpu_share = min(1.0, cpu / wall) if wall > 0 else 0.0
        cpu_ms = cpu / len(self._window) * 1000.0
        self.cpu_bound = (
            self.cpu_share >= self._policy.cpu_share and cpu_ms >= self._policy.min_cpu_ms
        )
        if self.cpu_bound and self._sendable is None:
            self._sendable = self._importable()
        self.pool = "process" if self.cpu_bound and self._sendable else "thread"
        self.decisions[self.pool] += 1
        self._since_decision = 0
        self._decided_at = self._clock()

    def details(self) -> dict[str, object]:
        return {
            "pool": self.pool,
            "decided": self._decided_at is not None,
            "cpu_share": None if self.cpu_share is None else round(self.cpu_share, 3),
            "samples": len(self._window),
            "calls": self.calls,
            "fallbacks": dict(self.fallbacks),
        }


class AutoDecisions:
    """Every auto function's state in this process, by dotted name, made at its first call."""

    def __init__(self, policy: AutoPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._functions: dict[str, AutoFunction] = {}

    def of(self, name: str, importable: Callable[[], bool]) -> AutoFunction:
        function = self._functions.get(name)
        if function is None:
            function = AutoFunction(self.policy, importable, self._clock)
            self._functions[name] = function
        return function

    def details(self) -> dict[str, object]:
        return {name: function.details() for name, function in sorted(self._functions.items())}

    def families(self) -> Iterator[Family]:
        functions = sorted(self._functions.items())
        pools: tuple[PoolName, ...] = ("thread", "process")
        yield Family(
            "gauge",
            "offload_auto_pool",
            "1 on the pool an auto function's calls go to now (summed: workers sending it there).",
            ("function", "pool"),
            [((n, p), 1 if f.pool == p else 0) for n, f in functions for p in pools],
        )
        yield Family(
            "counter",
            "offload_auto_decisions_total",
            "Decisions of where an auto function runs, by the pool chosen.",
            ("function", "pool"),
            [((n, p), f.decisions[p]) for n, f in functions for p in pools],
        )
        reasons: tuple[Fallback, ...] = ("unpicklable_function", "unpicklable_arguments")
        yield Family(
            "counter",
            "offload_auto_fallbacks_total",
            "Calls of a CPU-bound auto function that ran on threads instead, by reason.",
            ("function", "reason"),
            [((n, r), f.fallbacks[r]) for n, f in functions for r in reasons],
        )
