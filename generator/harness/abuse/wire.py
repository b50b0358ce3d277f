"""The attacker's socket: raw HTTP/1.1 bytes on a loopback connection, from any 127/8 source.

An HTTP client library refuses or repairs most of what an attacker sends (a megabyte header
line, a trickled header, a body slower than its length says, bytes that are not UTF-8), so
abusive requests are written as bytes here. Every request asks for `Connection: close`, so an
answer ends where the server closes; only its status line and its size are kept.

Contract: every call is bounded by its own deadline (`asyncio.timeout`, monotonic clock); a
connection is always closed on the way out, cancellation included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass

from generator.harness.servers import HOST

# Written in pieces this size, so a server that answers early (413) is heard while sending.
_CHUNK = 64 * 1024
_STATUS_LINE_MAX = 64


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back for one request."""

    # None: no status line at all (refused, reset, closed or timed out first).
    status: int | None
    # Bytes of the whole answer, status line and headers included.
    size: int
    # What cut it short, if anything: "timeout", "reset", "refused", "held" (trickle), or the
    # system's words for another socket error.
    error: str = ""


def request(
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    length: int | None = None,
) -> bytes:
    """A request's bytes; headers are latin-1, so any byte value can be sent in one.

    `length` overrides the Content-Length (a body announced longer than sent); a body with no
    length and `("Transfer-Encoding", "chunked")` among `headers` is sent as one chunk.
    """
    chunked = any(name.lower() == "transfer-encoding" for name, _ in headers)
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in headers)]
    if not chunked and (body or length is not None or method in {"POST", "PUT", "PATCH"}):
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if chunked:
        return head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    return head + body


def status_of(first_bytes: bytes) -> int | None:
    """The status code of `HTTP/1.1 413 ...`, or None when that is not a status line."""
    parts = first_bytes.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


async def _connect(
    port: int, source: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    local = (source, 0) if source else None
    return await asyncio.open_connection(HOST, port, local_addr=local)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write in pieces; a server that closed early (it answered already) ends the sending."""
    with suppress(ConnectionError):
        for start in range(0, len(data), _CHUNK):
            writer.write(data[start : start + _CHUNK])
            await writer.drain()


async def _read(reader: asyncio.StreamReader) -> tuple[bytes, int]:
    """The answer's first bytes and its whole size, read until the server closes."""
    first = b""
    size = 0
    while chunk := await reader.read(_CHUNK):
        if len(first) < _STATUS_LINE_MAX:
            first += chunk[: _STATUS_LINE_MAX - len(first)]
        size += len(chunk)
    return first, size


async def exchange(
    port: int, data: bytes, *, source: str | None = None, timeout_s: float = 5.0
) -> Answer:
    """Send `data` on a new connection and read the answer until the server closes.

    The answer is read while the request is still being written, as a server may refuse a
    body before it has all arrived.
    """
    first, size, error = b"", 0, ""
    writer: asyncio.StreamWriter | None = None
    sending: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await _connect(port, source)
            sending = asyncio.create_task(_send(writer, data))
            first, size = await _read(reader)
    except TimeoutError:
        error = "timeout"
    except ConnectionRefusedError:
        error = "refused"
    except ConnectionError:
        error = "reset"
    except OSError as exc:  # e.g. no source port left: a figure, not a crashed run
        error = exc.strerror or type(exc).__name__
    finally:
        if sending is not None:
            sending.cancel()
            with suppress(asyncio.CancelledError):
                await sending
        if writer is not None:
            writer.close()
    return Answer(status_of(first), size, error)


async def trickle(
    port: int,
    head: bytes,
    *,
    every_s: float,
    until: float,
    source: str | None = None,
) -> Answer:
    """A slow client: send `head`, then one byte every `every_s` until `until` (monotonic) or
    until the server answers or closes. `error` is "held" when the server kept it to the end.
    """
    writer: asyncio.StreamWriter | None = None
    first, size = b"", 0
    try:
        reader, writer = await _connect(port, source)
        writer.write(head)
        await writer.drain()
        reading = asyncio.ensure_future(_read(reader))
        try:
            while time.monotonic() < until and not reading.done():
                await asyncio.wait({reading}, timeout=min(every_s, until - time.monotonic()))
                if not reading.done():
                    writer.write(b"a")
                    await writer.drain()
            if not reading.done():
                return Answer(None, 0, "held")
            first, size = reading.result()
        finally:
            reading.cancel()
    except ConnectionRefusedError:
        return Answer(None, 0, "refused")
    except ConnectionError:
        return Answer(status_of(first), size, "reset")
    except OSError as exc:
        return Answer(None, 0, exc.strerror or type(exc).__name__)
    finally:
        if writer is not None:
            writer.close()
    return Answer(status_of(first), size, "" if first else "closed")


async def flood(
    port: int,
    make: Callable[[int], bytes],
    *,
    rate: float,
    duration_s: float,
    concurrency: int = 64,
    timeout_s: float = 5.0,
) -> tuple[list[Answer], float]:
    """Send `make(i)` at `rate` requests a second for `duration_s`, at most `concurrency` at once.

    Returns every answer and the rate achieved (a busy harness may fall short of `rate`; the
    figure says so rather than the run pretending).
    """
    slots = asyncio.Semaphore(concurrency)
    answers: list[Answer] = []

    async def one(index: int) -> None:
        try:
            answers.append(await exchange(port, make(index), timeout_s=timeout_s))
        finally:
            slots.release()

    started = time.monotonic()
    index = 0
    async with asyncio.TaskGroup() as group:
        while (now := time.monotonic()) - started < duration_s:
            due = started + index / rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            await slots.acquire()
            group.create_task(one(index))
            index += 1
    elapsed = time.monotonic() - started
    return answers, len(answers) / elapsed if elapsed > 0 else 0.0
