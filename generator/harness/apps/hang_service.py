"""The generated service plus one route that never returns, for the `hang` chaos scenario.

Runs on the generated project's interpreter (like overload_service.py, it imports nothing from
Bulwark); the harness names the project's package in BULWARK_PACKAGE. The route exists here
only: a product that shipped it would hand any client a way to stop a worker.
"""

import importlib
import os
import time

app = importlib.import_module(f"{os.environ['BULWARK_PACKAGE']}.main").create_app()


def wait_forever() -> None:
    """A blocking call with no timeout (a lock never released, a socket never answered)."""
    while True:
        time.sleep(1.0)


async def hang() -> dict[str, str]:
    """Holds the event loop: every other request of this worker waits behind it."""
    wait_forever()
    return {"status": "unreachable"}


app.add_api_route("/hang", hang, methods=["GET"])
