"""The decorators that make a blocking or CPU-bound function awaitable on an offload pool."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from .auto import PoolName
from .pools import ArgumentsDoNotPickle, ByName, running

P = ParamSpec("P")
R = TypeVar("R")


def _offloaded(pool: PoolName, fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    if pool == "process" and "<locals>" in fn.__qualname__:
        raise TypeError(f"@offload.process needs a module-level function, not {fn.__qualname__}")
    by_name = ByName(fn.__module__, fn.__qualname__)

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        offload = running()
        if pool == "thread":
            timed = await offload.thread(fn, args, kwargs)
        else:
            timed = await offload.process(by_name, args, kwargs)
        result: R = timed.value
        return result

    return call


def thread(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run `fn` on the bounded thread pool: blocking I/O, C code that releases the GIL."""
    return _offloaded("thread", fn)


def process(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run `fn` on the bounded process pool: pure-Python CPU work.

    `fn` must be defined at module level and take and return picklable values.
    """
    return _offloaded("process", fn)


def auto(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run `fn` where its measured calls say it belongs: CPU-bound on processes, else threads.

    Its first calls run on threads and are timed there (see `auto.py` for the rule). A CPU-bound
    call goes to the process pool only if the worker can import `fn` by name and its arguments
    pickle; otherwise it runs on threads and the reason is counted. Its result must pickle.
    """
    if not callable(fn):
        raise TypeError("@offload.auto takes no hint: it measures the function's calls")
    name = f"{fn.__module__}.{fn.__qualname__}"
    by_name = ByName(fn.__module__, fn.__qualname__)

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        offload = running()
        function = offload.decisions.of(name, importable)
        if function.route() == "process":
            try:
                timed = await offload.process(by_name, args, kwargs)
            except ArgumentsDoNotPickle:
                function.fell_back("unpicklable_arguments")
                timed = await offload.thread(fn, args, kwargs)
        else:
            timed = await offload.thread(fn, args, kwargs)
        function.record(timed.wall_s, timed.cpu_s)
        result: R = timed.value
        return result

    def importable() -> bool:
        return by_name.finds(call)

    return call
