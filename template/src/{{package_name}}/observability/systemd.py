"""systemd's notify protocol: READY=1 once a worker serves, WATCHDOG=1 while its loop turns.

Under a `Type=notify` unit with `WatchdogSec=`, systemd restarts the service when no
`WATCHDOG=1` arrives within that time. The heartbeat is a timer on the event loop, so it
stops exactly when the loop stops turning. With several uvicorn workers every worker notifies
(the unit says `NotifyAccess=all`): the supervisor that systemd started runs no event loop,
so only the workers can tell; systemd then acts when no worker's loop turns, and a single
stuck worker is the loop monitor's to end. Outside systemd (no $NOTIFY_SOCKET) nothing is sent.

Written by hand: the protocol is one datagram per message on a Unix socket, and the libraries
for it need libsystemd (systemd-python) or are a thin, unmaintained wrapper of these lines.
"""

from __future__ import annotations

import asyncio
import os
import socket


class Notifier:
    """The datagram socket to systemd; sends never block and never raise."""

    def __init__(self, address: str) -> None:
        # "@name" is a socket in the abstract namespace, written with a leading NUL.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.setblocking(False)

    @classmethod
    def from_env(cls) -> Notifier | None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        return cls(address) if address.startswith(("/", "@")) else None

    def send(self, message: bytes) -> bool:
        """One message; False when systemd is gone or its queue is full (the next beat retries)."""
        try:
            self._socket.sendto(message, self._address)
        except OSError:
            return False
        return True

    def close(self) -> None:
        self._socket.close()


class Heartbeat:
    """`READY=1` at start, then `WATCHDOG=1` every half of systemd's watchdog period."""

    def __init__(self, notifier: Notifier, interval_s: float | None) -> None:
        self._notifier = notifier
        self._interval_s = interval_s
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._notifier.send(b"READY=1")
        if self._interval_s is not None:
            self._beat(self._interval_s)

    def _beat(self, interval_s: float) -> None:
        self._notifier.send(b"WATCHDOG=1")
        self._handle = asyncio.get_running_loop().call_later(interval_s, self._beat, interval_s)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._notifier.close()


def start_heartbeat() -> Heartbeat | None:
    """Announce this worker ready and keep systemd's watchdog fed; None outside systemd.

    Call on the event loop, once the worker's resources have started.
    """
    notifier = Notifier.from_env()
    if notifier is None:
        return None
    # systemd sets WATCHDOG_USEC for the process it started; workers inherit it. Half the
    # period between beats, as sd_watchdog_enabled(3) advises.
    usec = os.environ.get("WATCHDOG_USEC", "")
    heartbeat = Heartbeat(notifier, int(usec) / 2e6 if usec.isdigit() and int(usec) else None)
    heartbeat.start()
    return heartbeat
