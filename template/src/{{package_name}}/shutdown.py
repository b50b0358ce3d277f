"""Graceful shutdown: readiness fails first, in-flight requests finish, then resources close.

On SIGTERM (or SIGINT) `Drain` turns `/ready` to 503 at once and keeps serving new requests for
`delay_s`, the time a load balancer needs to see it and stop sending traffic; then it passes the
signal on to uvicorn, which stops accepting connections and waits up to its
`timeout_graceful_shutdown` for the requests in flight. The lifespan then stops the resources
(pools, clients) in reverse order. Deadlines line up: delay + graceful timeout < the platform's
kill timeout (terminationGracePeriodSeconds 45 s, systemd TimeoutStopSec 45 s).

Hooking is done in the lifespan, after uvicorn installed its own handlers, and only in the main
thread of a process whose server installed a Python handler; elsewhere (tests) it is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drain:
    """Lifespan resource whose check fails once shutdown has begun."""

    name = "accepting_traffic"

    def __init__(self, delay_s: float) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must not be negative, got {delay_s}")
        self.delay_s = delay_s
        self.draining = False
        self._previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            if callable(previous):  # the server's handler: ours runs first, then hands over
                self._previous[signum] = previous
                signal.signal(signum, self._on_signal)

    async def stop(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    async def check(self) -> bool:
        return not self.draining

    def details(self) -> dict[str, object]:
        return {"draining": self.draining, "delay_s": self.delay_s}

    def begin(self) -> None:
        """Fail readiness from now on (also callable by an admin hook or a test)."""
        if not self.draining:
            self.draining = True
            logger.warning(
                "shutdown requested: readiness now fails", extra={"delay_s": self.delay_s}
            )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous[signum]
        if self.draining or self.delay_s == 0 or self._loop is None:
            self.begin()
            previous(signum, frame)  # a second signal, or no delay: the server stops now
            return
        self.begin()
        # Runs in the main thread between bytecodes: wake the loop rather than touch it here.
        self._loop.call_soon_threadsafe(
            self._loop.call_later, self.delay_s, previous, signum, frame
        )


def exit_zero_after_shutdown() -> None:
    """Make a SIGTERM-initiated, completed graceful shutdown exit with status 0.

    uvicorn re-raises the signal after shutting down, under the handler it found at start;
    with the default handler the process would die of SIGTERM (status 143) although nothing
    failed. Call before `uvicorn.run`.
    """
    signal.signal(signal.SIGTERM, _exit_zero)


def _exit_zero(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
