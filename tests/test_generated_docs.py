"""The generated project's own docs/ (one page per feature and target): for every answer set of
the matrix, every setting is documented with its variable and default and listed in
`.env.example` (set there only to its default), no page names a setting the service lacks, and
every relative link and every `docs/*.md` a file cites resolves. Slow tests then start the full
preset to check that every metric family it exports is documented, and build one route per
feature from the docs' code examples alone (ruff, mypy --strict, the request each page shows,
and with metrics on, each new route counted under its template)."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
import textwrap
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import copier
import pytest
import yaml
from conftest import REPO_ROOT

from generator.answers import questions
from generator.harness import matrix, servers
from generator.harness import project as proj

SETS = matrix.answer_sets()
MATRIX = {answer_set.name: answer_set.data for answer_set in SETS}
# The answer sets with every feature and target, and with none of either.
FULL = next(a.name for a in SETS if set(questions()["features"].choices) <= set(a.features))
NONE = next(a.name for a in SETS if not a.features and not a.targets)
STEP_TIMEOUT_S = 900.0

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
TABLE_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|([^|]*)\|")
CITED_DOC = re.compile(r"\bdocs/[A-Za-z0-9_.-]+\.md\b")
# Code examples meant to be copied whole: a python block whose first line names its file.
EXAMPLE = re.compile(r"```python\n# (src/[\w/]+/api/(\w+)\.py)\n(.*?)```", re.S)
CONSOLE = re.compile(r"```console\n(.*?)```", re.S)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Render an answer set of the matrix once per module; return the project's root."""
    projects: dict[str, Path] = {}

    def render(name: str) -> Path:
        if name not in projects:
            dest = tmp_path_factory.mktemp(name) / "svc"
            copier.run_copy(
                str(REPO_ROOT), dest, data=MATRIX[name], defaults=True, vcs_ref="HEAD", quiet=True
            )
            projects[name] = dest
        return projects[name]

    return render


# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    field: str
    env: str
    default: str  # as the docs write it: `required`, `unset`, `true`, `30`, `["/metrics"]`


def package_of(project: Path) -> str:
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    return str(answers["package_name"])


def settings_of(project: Path) -> list[Setting]:
    """The fields of the rendered `Settings` class (and of the classes it derives from in the
    package), read from source so every answer set is checked without a virtualenv."""
    package = package_of(project)
    classes: dict[str, ast.ClassDef] = {}
    for module in sorted((project / "src" / package).rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, node)
    assert "Settings" in classes, f"no Settings class under src/{package}"
    prefix = f"{package.upper()}_"
    settings: dict[str, Setting] = {}
    pending = [classes["Settings"]]
    while pending:
        cls = pending.pop()
        pending.extend(
            classes[base.id]
            for base in cls.bases
            if isinstance(base, ast.Name) and base.id in classes
        )
        for statement in cls.body:
            if not (
                isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
            ):
                continue
            if "ClassVar" in ast.unparse(statement.annotation):
                continue
            name = statement.target.id
            env, default = _env_and_default(name, statement.value, prefix)
            settings.setdefault(name, Setting(name, env, default))
    return sorted(settings.values(), key=lambda setting: setting.field)


def _env_and_default(name: str, value: ast.expr | None, prefix: str) -> tuple[str, str]:
    env = f"{prefix}{name.upper()}"
    default: ast.expr | None = value
    if isinstance(value, ast.Call) and ast.unparse(value.func) == "Field":
        default = None
        if value.args and not _is_ellipsis(value.args[0]):
            default = value.args[0]
        for keyword in value.keywords:
            if keyword.arg == "default":
                default = keyword.value
            if keyword.arg in {"validation_alias", "alias"} and isinstance(
                keyword.value, ast.Constant
            ):
                env = str(keyword.value.value)
    if default is None:
        return env, "required"
    return env, doc_value(_evaluate(default))


def _is_ellipsis(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is Ellipsis


def _evaluate(node: ast.expr) -> object:
    # The temporary directory is documented as $TMPDIR, whatever this machine's is.
    names = {
        "Path": Path,
        "frozenset": frozenset,
        "tempfile": SimpleNamespace(gettempdir=lambda: "$TMPDIR"),
    }
    code = compile(ast.Expression(node), "<default>", "eval")
    return eval(code, {"__builtins__": {}}, names)


def doc_value(value: object) -> str:
    """A default as the docs (and an env file) write it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, frozenset | set | list | tuple):
        return json.dumps(sorted(value))
    return str(value)


def documented_rows(project: Path) -> dict[str, list[tuple[str, str]]]:
    """Settings-table rows of docs/*.md: variable -> [(page, default cell)]."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for page in sorted((project / "docs").glob("*.md")):
        for line in prose_lines(page.read_text(encoding="utf-8")):
            match = TABLE_ROW.match(line)
            if match:
                rows.setdefault(match.group(1), []).append((page.name, match.group(2).strip()))
    return rows


def prose_lines(text: str) -> Iterator[str]:
    """The lines of a markdown text outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def undocumented_settings(project: Path) -> list[str]:
    rows = documented_rows(project)
    problems = []
    for setting in settings_of(project):
        found = rows.get(setting.env)
        if not found:
            problems.append(f"{setting.env} ({setting.field}): in no settings table of docs/")
            continue
        for page, cell in found:
            if not cell.startswith(f"`{setting.default}`"):
                problems.append(
                    f"{setting.env}: docs/{page} gives {cell!r}, the default is `{setting.default}`"
                )
    return problems


@pytest.mark.parametrize("answers", list(MATRIX))
def test_every_setting_is_documented_with_its_default(
    answers: str, rendered: Callable[[str], Path]
) -> None:
    project = rendered(answers)
    assert undocumented_settings(project) == []


@pytest.mark.parametrize("answers", list(MATRIX))
def test_docs_name_no_setting_the_service_lacks(
    answers: str, rendered: Callable[[str], Path]
) -> None:
    project = rendered(answers)
    known = {setting.env for setting in settings_of(project)}
    named = re.compile(rf"\b{package_of(project).upper()}_[A-Z0-9_]+\b")
    unknown = {
        f"docs/{page.name}: {name}"
        for page in (project / "docs").glob("*.md")
        for name in named.findall(page.read_text(encoding="utf-8"))
        if name not in known
    }
    assert sorted(unknown) == []


def missing_from_env_example(project: Path) -> list[str]:
    text = (project / ".env.example").read_text(encoding="utf-8")
    return [
        setting.env
        for setting in settings_of(project)
        if not re.search(rf"^#?\s*{setting.env}=", text, re.M)
    ]


def test_env_example_lists_every_setting(rendered: Callable[[str], Path]) -> None:
    missing = {name: missing_from_env_example(rendered(name)) for name in MATRIX}
    assert {name: found for name, found in missing.items() if found} == {}


def env_example_not_defaults(project: Path) -> list[str]:
    """Settings `.env.example` sets (uncommented) to anything but their default; the
    environment is exempt, the file being for local runs (dev)."""
    text = (project / ".env.example").read_text(encoding="utf-8")
    exempt = f"{package_of(project).upper()}_ENVIRONMENT"
    wrong = []
    for setting in settings_of(project):
        for value in re.findall(rf"^{setting.env}=(.*)$", text, re.M):
            if setting.env != exempt and value != setting.default:
                wrong.append(f"{setting.env}={value} (default `{setting.default}`)")
    return wrong


def test_env_example_sets_only_defaults(rendered: Callable[[str], Path], tmp_path: Path) -> None:
    wrong = {name: env_example_not_defaults(rendered(name)) for name in MATRIX}
    assert {name: found for name, found in wrong.items() if found} == {}
    project = shutil.copytree(rendered(FULL), tmp_path / "svc")
    env_example = project / ".env.example"
    prefix = package_of(project).upper()
    text = env_example.read_text(encoding="utf-8")
    wrong_port = text.replace(f"{prefix}_PORT=8000", f"{prefix}_PORT=8080")
    env_example.write_text(wrong_port, encoding="utf-8")
    assert env_example_not_defaults(project) == [f"{prefix}_PORT=8080 (default `8000`)"]


def test_settings_check_fails_on_a_wrong_default(
    rendered: Callable[[str], Path], tmp_path: Path
) -> None:
    project = shutil.copytree(rendered(FULL), tmp_path / "svc")
    page = project / "docs" / "configuration.md"
    prefix = package_of(project).upper()
    text = page.read_text(encoding="utf-8")
    wrong = text.replace(f"| `{prefix}_PORT` | `8000` |", f"| `{prefix}_PORT` | `8080` |")
    assert wrong != text
    page.write_text(wrong, encoding="utf-8")
    assert undocumented_settings(project) == [
        f"{prefix}_PORT: {page.relative_to(project)} gives '`8080`', the default is `8000`"
    ]
    page.write_text(text.replace(f"| `{prefix}_PORT` |", "| `PORT` |"), encoding="utf-8")
    assert undocumented_settings(project) == [
        f"{prefix}_PORT (port): in no settings table of docs/"
    ]


# --- links ------------------------------------------------------------------------------------


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    found = set()
    for line in prose_lines(markdown):
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def broken_links(project: Path) -> list[str]:
    """Relative links of every markdown file that point at no file, or at no heading of it."""
    broken = []
    for page in sorted(project.rglob("*.md")):
        if ".venv" in page.parts:
            continue
        for line in prose_lines(page.read_text(encoding="utf-8")):
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue  # http:, https:, mailto:
                path, _, anchor = target.partition("#")
                resolved = (page.parent / path).resolve() if path else page
                where = f"{page.relative_to(project)}: {target}"
                if not resolved.exists():
                    broken.append(where)
                elif anchor and anchor not in anchors(resolved.read_text(encoding="utf-8")):
                    broken.append(f"{where} (no such heading)")
    return broken


@pytest.mark.parametrize("answers", list(MATRIX))
def test_every_relative_link_resolves(answers: str, rendered: Callable[[str], Path]) -> None:
    project = rendered(answers)
    assert broken_links(project) == []


def test_link_check_finds_a_broken_link(rendered: Callable[[str], Path], tmp_path: Path) -> None:
    project = shutil.copytree(rendered(FULL), tmp_path / "svc")
    with (project / "docs" / "index.md").open("a", encoding="utf-8") as page:
        page.write("\nSee [gone](gone.md) and [a heading](operations.md#no-such-heading).\n")
    assert broken_links(project) == [
        "docs/index.md: gone.md",
        "docs/index.md: operations.md#no-such-heading (no such heading)",
    ]


def cited_docs_missing(project: Path) -> list[str]:
    """`docs/<page>.md` named in the project's files (comments, env files) that it lacks."""
    missing = []
    for path in sorted(project.rglob("*")):
        if not path.is_file() or ".venv" in path.parts or path.suffix in {".pyc"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for cited in sorted(set(CITED_DOC.findall(text))):
            if not (project / cited).is_file():
                missing.append(f"{path.relative_to(project)}: {cited}")
    return missing


def test_every_cited_docs_page_exists(rendered: Callable[[str], Path]) -> None:
    missing = {name: cited_docs_missing(rendered(name)) for name in MATRIX}
    assert {name: found for name, found in missing.items() if found} == {}


# --- a running sample: metrics and the route examples ------------------------------------------


@pytest.fixture(scope="module")
def synced() -> Iterator[Callable[[str], proj.Project]]:
    """Render an answer set with its virtualenv once per module, outside pytest's temp root
    (the embedded PostgreSQL runs as its own user, and a new pytest session locks that root)."""
    projects: dict[str, proj.Project] = {}
    with tempfile.TemporaryDirectory(prefix="bulwark-gendocs-") as tmp:

        def sync(name: str) -> proj.Project:
            if name not in projects:
                root = Path(tmp) / name
                copier.run_copy(
                    str(REPO_ROOT),
                    root,
                    data=MATRIX[name],
                    defaults=True,
                    vcs_ref="HEAD",
                    quiet=True,
                )
                projects[name] = proj.Project.load(root)
                proj.create_environment(projects[name])
            return projects[name]

        yield sync


@pytest.fixture
def full_project(synced: Callable[[str], proj.Project]) -> proj.Project:
    return synced(FULL)


def exported_families(exposition: str) -> set[str]:
    return {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}


@pytest.mark.slow
def test_every_exported_metric_family_is_documented(full_project: proj.Project) -> None:
    with (
        proj.database(full_project) as extra_env,
        servers.service(full_project, extra_env) as server,
    ):
        for path in ("/health", "/ready", "/items/1", "/payments/p1", "/nowhere"):
            with contextlib.suppress(OSError):  # a 404 or a 502 is counted all the same
                urllib.request.urlopen(server.url(path), timeout=10).close()
        with urllib.request.urlopen(server.url("/metrics"), timeout=10) as response:
            exposition = response.read().decode()
    docs = "\n".join(
        page.read_text(encoding="utf-8") for page in (full_project.root / "docs").glob("*.md")
    )
    families = exported_families(exposition)
    assert len(families) > 20, exposition
    assert sorted(name for name in families if f"`{name}`" not in docs) == []


@pytest.mark.slow
def test_settings_read_from_source_match_the_imported_class(full_project: proj.Project) -> None:
    """The source reading above against pydantic's own view of the same class."""
    script = textwrap.dedent(
        f"""
        import json, tempfile
        from pathlib import Path
        from pydantic_core import PydanticUndefined
        from {full_project.package_name}.settings import Settings

        def plain(value):
            if isinstance(value, frozenset | set):
                return sorted(value)
            return str(value) if isinstance(value, Path) else value

        fields = {{
            info.validation_alias or "{full_project.env_prefix}" + name.upper():
            "required" if info.default is PydanticUndefined else plain(info.default)
            for name, info in Settings.model_fields.items()
        }}
        print(json.dumps({{"tmp": tempfile.gettempdir(), "fields": fields}}))
        """
    )
    out = proj.run_step(
        [str(full_project.python), "-c", script], cwd=full_project.root, timeout=120
    )
    imported = json.loads(out.strip().splitlines()[-1])
    expected = {
        env: value if value == "required" else doc_value(value)
        for env, value in imported["fields"].items()
    }
    from_source = {
        setting.env: setting.default.replace("$TMPDIR", imported["tmp"])
        for setting in settings_of(full_project.root)
    }
    assert from_source == expected


@dataclass(frozen=True, slots=True)
class Example:
    page: str
    path: str  # src/<pkg>/api/<module>.py
    module: str
    code: str
    requests: tuple[tuple[str, str, int], ...]  # (method, path, status the page shows)


def examples_of(project: Path) -> list[Example]:
    """Each marked python block of docs/*.md with the console block that follows it."""
    found = []
    for page in sorted((project / "docs").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in EXAMPLE.finditer(text):
            console = CONSOLE.search(text, match.end())
            assert console, f"docs/{page.name}: {match.group(1)} has no console block after it"
            found.append(
                Example(
                    page=page.name,
                    path=match.group(1),
                    module=match.group(2),
                    code=f"# {match.group(1)}\n{match.group(3)}",
                    requests=tuple(_requests(console.group(1))),
                )
            )
    return found


def _requests(console: str) -> Iterator[tuple[str, str, int]]:
    lines = console.splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("$ curl "):
            continue
        words = shlex.split(line[2:])
        method = words[words.index("-X") + 1] if "-X" in words else "GET"
        url = next(word for word in words if word.startswith("http://"))
        status = int(lines[index + 1].split()[1])
        yield method, url.split("8000", 1)[1], status


def test_examples_are_found_with_their_requests(rendered: Callable[[str], Path]) -> None:
    """The docs show one complete route module, and its requests, per feature used in code."""
    examples = {example.page: example for example in examples_of(rendered(FULL))}
    assert set(examples) == {
        "cache.md",
        "circuit-breakers.md",
        "database.md",
        "offload.md",
        "rate-limiting.md",
        "redis.md",
        "requests.md",
        "timeout.md",
    }
    assert examples["circuit-breakers.md"].requests == (
        ("GET", "/refunds/pay_123", 502),
        ("GET", "/refunds/pay_123", 503),
    )
    assert examples["redis.md"].requests == (("POST", "/visits/home", 200),)
    assert [example.page for example in examples_of(rendered(NONE))] == ["requests.md"] * 2


DOC_EXAMPLES_TEST = '''\
"""Routes written from docs/ alone, mounted on the app and asked what the docs show."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Match

from {package}.api import add_routes
from {package}.api import {modules}
from {package}.main import create_app
from {package}.settings import Settings

REQUESTS = {requests!r}
# With metrics on, a new route is counted under its template with no code of its own.
METRICS = {metrics!r}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("module", sorted(REQUESTS))
def test_route_from_the_docs(module: str, settings: Settings) -> None:
    if "payments_url" in Settings.model_fields:
        # No payments service listens there: the breaker example shows what a client then sees.
        settings = settings.model_copy(
            update={{"payments_url": f"http://127.0.0.1:{{_closed_port()}}"}}
        )
    app = create_app(settings)
    add_routes(app, globals()[module].router)
    with TestClient(app) as client:
        for method, path, status in REQUESTS[module]:
            response = client.request(method, path)
            assert response.status_code == status, (path, response.text)
        if METRICS:
            exposition = client.get("/metrics").text
            for method, path, _ in REQUESTS[module]:
                scope = {{"type": "http", "method": method, "path": path.partition("?")[0]}}
                [route] = [r for r in app.routes if r.matches(scope)[0] is Match.FULL]
                assert f'route="{{route.path}}"' in exposition, (path, exposition)
'''


@pytest.mark.slow
@pytest.mark.parametrize("answers", [FULL, NONE])
def test_a_route_per_feature_from_the_docs_alone(
    answers: str, synced: Callable[[str], proj.Project]
) -> None:
    project = synced(answers)
    root, package = project.root, project.package_name
    examples = examples_of(root)
    for example in examples:
        target = root / example.path
        assert not target.exists(), f"docs/{example.page} would overwrite {example.path}"
        target.write_text(example.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "DATABASE_URL"}}
    for command in (
        ["uv", "run", "ruff", "check", "."],
        ["uv", "run", "ruff", "format", "--check", "."],
        ["uv", "run", "mypy"],
    ):
        proj.run_step(command, cwd=root, env=env, timeout=STEP_TIMEOUT_S)
    # Written after the checks: it is this test's harness, not code from the docs.
    test_file = root / "tests" / "test_doc_examples.py"
    test_file.write_text(
        DOC_EXAMPLES_TEST.format(
            package=package,
            modules=", ".join(sorted(example.module for example in examples)),
            requests={example.module: example.requests for example in examples},
            metrics=(root / "docs" / "metrics.md").is_file(),
        ),
        encoding="utf-8",
    )
    pytest_command = ["uv", "run", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)]
    out = proj.run_step(pytest_command, cwd=root, env=env, timeout=STEP_TIMEOUT_S)
    assert f"{len(examples)} passed" in out, out
