"""Run blocking or CPU-bound functions off the event loop, on bounded executors.

    @offload.thread            # sync I/O or a C call that releases the GIL (file reads, hashing)
    def read_report(path: str) -> bytes: ...

    @offload.process           # pure-Python CPU work: a thread would still hold the GIL
    def score(rows: list[Row]) -> float: ...

    @offload.auto              # measured: CPU-bound calls move to processes, the rest threads
    def render(doc: Doc) -> bytes: ...

    result = await score(rows)  # each decorated function becomes awaitable

`pools.py` holds the executors and their contract, `auto.py` how `@offload.auto` decides,
`decorators.py` the decorators, `wiring.py` the feature's parts (docs/offload.md).
"""

from .decorators import auto, process, thread
from .pools import ArgumentsDoNotPickle, Offload, OffloadBusy
from .wiring import offload_busy_handler, wire

__all__ = [
    "ArgumentsDoNotPickle",
    "Offload",
    "OffloadBusy",
    "auto",
    "offload_busy_handler",
    "process",
    "thread",
    "wire",
]
