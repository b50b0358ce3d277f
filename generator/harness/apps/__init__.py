"""The apps the harness serves beside a generated service, by path.

Each runs under uvicorn on the generated project's interpreter (`--app-dir` this directory),
so the fastapi and uvicorn versions match the service's; none imports anything from Bulwark.
"""

from pathlib import Path

_HERE = Path(__file__).parent

# Bare FastAPI, one /health route: every ratio's baseline unless a scenario names another.
BASELINE = _HERE / "baseline.py"
# Bare FastAPI + asyncpg reading one item by id: the data scenarios' baseline.
BASELINE_DB = _HERE / "baseline_db.py"
# The generated service plus a slow route, and bare FastAPI with the same route: overload.
OVERLOAD_SERVICE = _HERE / "overload_service.py"
OVERLOAD_BASELINE = _HERE / "overload_baseline.py"
# A JSON route among the generated service's routes, and bare FastAPI (or a peer stack) with
# the same route table: the routed scenarios, one module for every side.
ROUTED = _HERE / "routed.py"
# The generated service plus a route that blocks its loop forever: the `hang` chaos scenario.
HANG_SERVICE = _HERE / "hang_service.py"
