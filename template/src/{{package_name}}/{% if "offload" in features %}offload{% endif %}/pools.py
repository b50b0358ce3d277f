"""The bounded thread and process executors, made by the lifespan, and how a call reaches them.

Each pool admits at most workers + `max_queued` calls; one more answers 503 (OffloadBusy) at
once instead of queueing without bound. Contract: a cancelled caller (a request timeout) stops
waiting, but work already running finishes in its worker and is counted until then. Every call
is timed where it runs, by the wall clock and the running thread's CPU clock, so measuring it
costs the event loop nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import pickle
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, NamedTuple

from ..observability.stats import Family, Histogram
from .auto import AutoDecisions, AutoPolicy, PoolName

logger = logging.getLogger(__name__)

RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)
SHUTDOWN_TIMEOUT_S = 10.0


class OffloadBusy(Exception):
    """The pool has as many calls running and waiting as it admits."""

    def __init__(self, pool: PoolName) -> None:
        super().__init__(f"the {pool} offload pool is full")
        self.pool = pool


class ArgumentsDoNotPickle(pickle.PicklingError):
    """A call's arguments could not be sent to a worker process; the function never ran."""


class Timed(NamedTuple):
    """A call's result and what it cost in its worker."""

    value: Any
    wall_s: float
    cpu_s: float


class _Pool:
    """One executor with its admission bound and counters (all touched on the loop thread)."""

    def __init__(self, name: PoolName, executor: Executor, workers: int, max_queued: int) -> None:
        self.name = name
        self.executor = executor
        self.workers = workers
        self.limit = workers + max_queued
        self.pending = 0  # admitted and not finished: running, then queued
        self.rejected = 0
        self.run_time = Histogram(RUN_BUCKETS)

    def finished(self, elapsed_s: float | None) -> None:
        self.pending -= 1
        if elapsed_s is not None:
            self.run_time.observe(elapsed_s)


class Offload:
    """Lifespan part (Resource shape) owning the executors and the `@offload.auto` decisions."""

    name = "offload"

    def __init__(
        self,
        *,
        thread_workers: int,
        process_workers: int,
        max_queued: int,
        auto: AutoPolicy,
    ) -> None:
        self._sizes = (thread_workers, process_workers, max_queued)
        self._pools: dict[PoolName, _Pool] = {}
        self.decisions = AutoDecisions(auto)

    async def start(self) -> None:
        global _active
        threads, processes, max_queued = self._sizes
        self._pools = {
            "thread": _Pool(
                "thread",
                ThreadPoolExecutor(threads, thread_name_prefix="offload"),
                threads,
                max_queued,
            ),
            # spawn, not fork: the parent has threads (logging, loop watchdog) a fork would copy
            # mid-flight, and the workers should not inherit the event loop or open sockets.
            "process": _Pool(
                "process",
                ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")),
                processes,
                max_queued,
            ),
        }
        _active = self

    async def stop(self) -> None:
        global _active
        if _active is self:
            _active = None
        for pool in self._pools.values():
            shutdown = asyncio.to_thread(pool.executor.shutdown, wait=True, cancel_futures=True)
            try:
                await asyncio.wait_for(shutdown, SHUTDOWN_TIMEOUT_S)
            except TimeoutError:
                logger.warning("offload pool still busy at shutdown", extra={"pool": pool.name})

    async def check(self) -> bool:
        return True

    def details(self) -> dict[str, object]:
        pools: dict[str, object] = {name: _pool_state(p) for name, p in self._pools.items()}
        return {**pools, "auto": self.decisions.details()}

    async def thread(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Timed:
        """Run `fn` on the thread pool."""
        return await self._run(self._pools["thread"], _timed, fn, args, kwargs)

    async def process(self, fn: ByName, args: Any, kwargs: Any) -> Timed:
        """Run the function named `fn` on the process pool.

        Raises ArgumentsDoNotPickle, before the function ever runs, when the arguments cannot
        be sent.
        """
        return await self._run(self._pools["process"], _timed_by_name, fn, _Arguments(args, kwargs))

    async def _run(self, pool: _Pool, *work: Any) -> Timed:
        if pool.pending >= pool.limit:
            pool.rejected += 1
            raise OffloadBusy(pool.name)
        pool.pending += 1
        loop = asyncio.get_running_loop()
        future: Future[tuple[bool, Any, float, float]] = pool.executor.submit(*work)

        def done(future: Future[tuple[bool, Any, float, float]]) -> None:
            elapsed = None if future.cancelled() or future.exception() else future.result()[2]
            loop.call_soon_threadsafe(pool.finished, elapsed)

        # Counted until the work itself ends, even when the caller stops waiting first.
        future.add_done_callback(done)
        ok, value, wall_s, cpu_s = await asyncio.wrap_future(future)
        if not ok:
            raise value
        return Timed(value, wall_s, cpu_s)

    def families(self) -> Iterator[Family]:
        pools = list(self._pools.values())
        yield Family(
            "gauge",
            "offload_queue_depth",
            "Offloaded calls waiting for a free worker.",
            ("pool",),
            [((p.name,), _pool_state(p)["queued"]) for p in pools],
        )
        yield Family(
            "gauge",
            "offload_running",
            "Offloaded calls running now.",
            ("pool",),
            [((p.name,), _pool_state(p)["running"]) for p in pools],
        )
        yield Family(
            "counter",
            "offload_rejected_total",
            "Offloaded calls refused because the pool was full (answered 503).",
            ("pool",),
            [((p.name,), p.rejected) for p in pools],
        )
        yield Family(
            "histogram",
            "offload_run_seconds",
            "Time an offloaded call ran in its worker.",
            ("pool",),
            [((p.name,), p.run_time) for p in pools],
        )
        yield from self.decisions.families()


_active: Offload | None = None


def running() -> Offload:
    """The executors of the running service; they exist only between start and stop."""
    if _active is None:
        raise RuntimeError("offload executors are not running: they start with the lifespan")
    return _active


def _pool_state(pool: _Pool) -> dict[str, int]:
    return {
        "workers": pool.workers,
        "running": min(pool.pending, pool.workers),
        "queued": max(0, pool.pending - pool.workers),
        "rejected": pool.rejected,
        "completed": pool.run_time.count,
    }


def _timed(target: Callable[..., Any], args: Any, kwargs: Any) -> tuple[bool, Any, float, float]:
    """Runs in the worker: the result or the exception, its wall and this thread's CPU time."""
    started, cpu_started = time.perf_counter(), time.thread_time()
    try:
        ok, value = True, target(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - re-raised in the caller, run time still counted
        ok, value = False, exc
    return ok, value, time.perf_counter() - started, time.thread_time() - cpu_started


class _Arguments:
    """A call's arguments on their way to a worker process.

    They are pickled here, in the executor's feeder thread, so a failure raises a type of its
    own: the caller can tell "never sent" (safe to run elsewhere) from a failure in the worker.
    """

    __slots__ = ("args", "kwargs")

    def __init__(self, args: Any, kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __reduce__(self) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
        try:
            sent = pickle.dumps((self.args, self.kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ArgumentsDoNotPickle(f"the call's arguments do not pickle: {exc}") from exc
        return pickle.loads, (sent,)


class ByName:
    """A module-level function found by name in a process worker (the name itself is picklable).

    The decorated name refers to the async wrapper; the worker unwraps it to the original.
    """

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def find(self) -> Any:
        found: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            found = getattr(found, part)
        return found

    def finds(self, wrapper: object) -> bool:
        """Whether the name leads to `wrapper` (not nested, not renamed or re-decorated)."""
        try:
            return "<locals>" not in self.qualname and self.find() is wrapper
        except (ImportError, AttributeError):
            return False


def _timed_by_name(name: ByName, sent: Any) -> tuple[bool, Any, float, float]:
    """`_timed` in a worker process; the function's module is imported before the clocks start."""
    args, kwargs = sent
    return _timed(name.find().__wrapped__, args, kwargs)
