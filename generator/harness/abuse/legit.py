"""Legitimate clients in a process of their own, beside the attack.

The attacks run in the harness's event loop: hundreds of coroutines connecting, trickling and
flooding at once. A probe in that loop waits for them before it can even read its answer, and
counted that wait as the service's latency (opening 200 slow connections at once held the
loop for tens of milliseconds; one run read a legitimate p99 of 192 ms behind nginx). In its
own process the probe is scheduled by the kernel beside the attackers, as a client on another
machine would be, so its figures are the service's and nginx's alone. The clock is
CLOCK_MONOTONIC, shared by every process on the machine, so the sample times line up with the
attack's.

Run by `legit_clients` as `python -m generator.harness.abuse.legit BASE_URL PATH`: it prints
its clock zero, probes until its stdin closes, then prints every sample as one JSON list.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field

from generator.harness.chaos.probe import Probe, Sample, probing

# Two legitimate clients, each a keep-alive connection reading the seeded item ~50 times a second.
LANES = 2
_TIMEOUT_S = 5.0
_START_TIMEOUT_S = 60.0


@dataclass(slots=True)
class LegitClients:
    """The running clients' clock zero (monotonic seconds); their samples once stopped."""

    zero: float
    samples: list[Sample] = field(default_factory=list)


@asynccontextmanager
async def legit_clients(base_url: str, path: str) -> AsyncIterator[LegitClients]:
    """Legitimate clients on `base_url` + `path` for the block, in a child process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        base_url,
        path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=_START_TIMEOUT_S)
        if not line:
            raise RuntimeError(f"the legitimate clients exited at start ({await process.wait()})")
        clients = LegitClients(float(line))
        yield clients
        process.stdin.close()
        out = await asyncio.wait_for(process.stdout.read(), timeout=_TIMEOUT_S + 10.0)
        clients.samples = [Sample(**sample) for sample in json.loads(out)]
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _probe_until_stdin_closes(base_url: str, path: str) -> list[Sample]:
    zero = time.monotonic()
    lanes = [(f"legit-{n}", path) for n in range(LANES)]
    probe = Probe(base_url, lanes, zero=zero, timeout_s=_TIMEOUT_S)
    async with probing(probe):
        print(zero, flush=True)
        await asyncio.to_thread(sys.stdin.read)
    return probe.samples


def main(argv: list[str]) -> None:
    base_url, path = argv
    samples = asyncio.run(_probe_until_stdin_closes(base_url, path))
    print(json.dumps([asdict(sample) for sample in samples]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
