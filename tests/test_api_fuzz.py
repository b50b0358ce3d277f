"""The full service under schemathesis: no 5xx, and every response as its OpenAPI says."""

import shutil
import subprocess
from pathlib import Path

import pytest

from generator.harness import project as proj
from generator.harness import servers

pytestmark = pytest.mark.slow

FUZZ_OPTIONS = ("--max-examples", "40", "--workers", "1", "--seed", "1", "--no-color")
# The example payments route calls an outbound service that no test runs here, so it answers
# 502/503 by design; its failure answers have their own tests in the generated project.
EXCLUDED = ("--exclude-path-regex", "^/payments/")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


@pytest.fixture
def project(full_sample: Path) -> proj.Project:
    project = proj.Project.load(full_sample)
    if not project.python.exists():  # another test of the session may have made it
        proj.create_environment(project)
    return project


def test_no_server_errors_and_no_schema_violations(project: proj.Project) -> None:
    schemathesis = shutil.which("schemathesis")
    assert schemathesis, "schemathesis is a dev dependency: run `uv sync`"
    # Production serves no API docs unless told to: the fuzzer reads the schema from the service.
    docs_on = project.settings_env({"OPENAPI_DOCS": "true"})
    with (
        proj.database(project) as extra_env,
        servers.service(project, {**extra_env, **docs_on}) as server,
    ):
        fuzzed = subprocess.run(
            [
                schemathesis,
                "run",
                server.url("/openapi.json"),
                "--checks",
                ",".join(CHECKS),
                *FUZZ_OPTIONS,
                *EXCLUDED,
            ],
            cwd=project.root,  # schemathesis keeps its example cache in the working directory
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert fuzzed.returncode == 0, fuzzed.stdout[-8000:]
