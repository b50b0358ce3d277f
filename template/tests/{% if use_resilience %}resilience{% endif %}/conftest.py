"""A real uvicorn server in a thread, for behaviour that depends on the server (cut streams)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import uvicorn
from starlette.types import ASGIApp


@contextmanager
def serving(app: ASGIApp, port: int) -> Iterator[str]:
    """Serve `app` on a loopback port for the block; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def serve(free_port: int) -> Callable[[ASGIApp], AbstractContextManager[str]]:
    """`with serve(app) as url:` runs `app` under a real uvicorn for the block."""
    return functools.partial(serving, port=free_port)
