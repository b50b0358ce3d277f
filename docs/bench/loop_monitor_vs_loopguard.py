"""Loop monitor vs fastapi-loopguard: idle CPU and blame accuracy, same run, same machine.

Each server runs alone under uvicorn (uvloop, httptools) pinned to CPU 0 with the same two
routes: `/block` calls `time.sleep(0.3)` on the loop, `/innocent` awaits `asyncio.sleep(0.15)`.
Per server: process CPU over an idle window, then ROUNDS rounds of 20 innocent requests in
flight while one `/block` runs; a response "blames" its request when it carries
`X-Blocking-Detected: true`.

    python docs/bench/loop_monitor_vs_loopguard.py \
        --project build/full --package full_svc --loopguard-python /tmp/lg/bin/python

`--project` is a generated service with the loop_monitor feature and its .venv; the loopguard
interpreter needs fastapi, fastapi-loopguard, uvicorn[standard] and httpx. Run this file with an
interpreter that has httpx (the loopguard one does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROUNDS = 10
INNOCENT = 20
IDLE_S = 30.0

ROUTES = """
import asyncio, time
from fastapi import FastAPI

app = FastAPI()


@app.get("/block")
async def block() -> dict[str, str]:
    time.sleep(0.3)
    return {}


@app.get("/innocent")
async def innocent() -> dict[str, str]:
    await asyncio.sleep(0.15)
    return {}
"""

APPS = {
    "none": ROUTES,
    "loopguard": ROUTES
    + """
from fastapi_loopguard import LoopGuardConfig, LoopGuardMiddleware

app.add_middleware(
    LoopGuardMiddleware, config=LoopGuardConfig(dev_mode=True, exclude_paths=frozenset())
)
""",
    "bulwark": ROUTES
    + """
import os
from contextlib import asynccontextmanager
from importlib import import_module

package = os.environ["BENCH_PACKAGE"]
Gate = import_module(f"{package}.gate").Gate
RequestIds = import_module(f"{package}.observability.request_id").RequestIds
loopmon = import_module(f"{package}.observability.loopmon")
monitor = loopmon.LoopMonitor(
    interval_s=float(os.environ["BENCH_INTERVAL_S"]),
    threshold=loopmon.AdaptiveThreshold(fallback_s=0.1, multiplier=5.0),
)


@asynccontextmanager
async def lifespan(_):
    await monitor.start()
    yield
    await monitor.stop()


app.router.lifespan_context = lifespan
app.add_middleware(Gate, request_ids=RequestIds(), header_sources=[monitor])
""",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    python: str, app_dir: Path, name: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [
        "taskset", "-c", "0", python, "-m", "uvicorn", f"{name}:app", "--app-dir", str(app_dir),
        "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
    ]  # fmt: skip
    server = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/innocent", timeout=2):
                return server, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"{name} did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def blame_round(port: int) -> tuple[bool, int]:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        innocents = [asyncio.create_task(client.get("/innocent")) for _ in range(INNOCENT)]
        await asyncio.sleep(0.03)
        blocker = await client.get("/block")
        flagged = [
            r.headers.get("x-blocking-detected") == "true" for r in await asyncio.gather(*innocents)
        ]
    return blocker.headers.get("x-blocking-detected") == "true", sum(flagged)


def measure(python: str, app_dir: Path, name: str, env: dict[str, str], label: str) -> None:
    server, port = start(python, app_dir, name, env)
    try:
        time.sleep(3)
        before = cpu_seconds(server.pid)
        time.sleep(IDLE_S)
        idle_pct = (cpu_seconds(server.pid) - before) / IDLE_S * 100
        caught, false_blames = 0, 0
        for _ in range(ROUNDS):
            hit, bystanders = asyncio.run(blame_round(port))
            caught += hit
            false_blames += bystanders
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        f"| {label} | {idle_pct:.3f} % | {caught}/{ROUNDS} | {false_blames}/{ROUNDS * INNOCENT} |",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--loopguard-python", required=True)
    args = parser.parse_args()
    service_python = str((args.project / ".venv" / "bin" / "python").absolute())
    with tempfile.TemporaryDirectory() as tmp:
        app_dir = Path(tmp)
        for name, source in APPS.items():
            (app_dir / f"{name}_app.py").write_text(source)
        print("| server | idle CPU | blocker blamed | bystanders blamed |")
        print("|---|---|---|---|")
        package = {"BENCH_PACKAGE": args.package}
        measure(service_python, app_dir, "none_app", {}, "no monitor")
        measure(service_python, app_dir, "bulwark_app", {**package, "BENCH_INTERVAL_S": "0.1"},
                "loop monitor, 100 ms (prod)")  # fmt: skip
        measure(service_python, app_dir, "bulwark_app", {**package, "BENCH_INTERVAL_S": "0.01"},
                "loop monitor, 10 ms (dev)")  # fmt: skip
        measure(args.loopguard_python, app_dir, "loopguard_app", {}, "fastapi-loopguard 10 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
