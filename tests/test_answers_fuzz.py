"""Hostile answers to copier.yml's questions are refused (exit 2, nothing written, the question
named) or land in the generated files verbatim, where a plain answer would: no answer adds,
ends or splits a line of any generated file.

The oracle for a rendered project is a render of the same choices with sentinel answers: put
each real answer where its sentinel is and the two trees must be equal, file for file; every
file keeps the sentinel render's line count; systemd-analyze and nginx -t accept the results.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import copier
import jinja2
import pytest
import yaml
from conftest import REPO_ROOT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from generator.answers import (
    CONTROL_PATTERN,
    MAX_WORKERS,
    NAME_MAX_LENGTH,
    NGINX_NAME_PATTERN,
    questions,
    validate,
)
from generator.cli import main
from generator.harness import nginx

TEXT_QUESTIONS = (
    "project_name",
    "project_slug",
    "package_name",
    "description",
    "author_name",
    "author_email",
    "nginx_server_name",
)
# Answers no template line contains by itself; the package name's upper case is the env prefix.
SENTINELS = {
    "project_name": "XnameX",
    "project_slug": "xslugx",
    "package_name": "xpkgx",
    "description": "XdescX",
    "author_name": "XauthorX",
    "author_email": "xmailx@xdomainx.test",
    "nginx_server_name": "xhostx",
}
ALL_TARGETS = ["docker", "kubernetes", "systemd", "nginx"]
# Choices a render is compared under; every target on, so every deploy file is checked.
CHOICES = [
    {
        "targets": ALL_TARGETS,
        "features": list(questions()["features"].choices),
        "python_version": "3.12",
        "systemd_workers": 4,
        "nginx_tls": False,
    },
    {
        "targets": ALL_TARGETS,
        "features": [],
        "python_version": "3.11",
        "systemd_workers": 0,
        "nginx_tls": True,
    },
]
# The exact exploits reported against the validators, each with the question that must refuse.
EXPLOITS = [
    pytest.param(
        {"project_name": "Evil\r[Service]\rExecStartPre=+/usr/bin/touch /x"},
        "project_name",
        id="systemd-line-via-carriage-return",
    ),
    pytest.param({"project_slug": "evil\n"}, "project_slug", id="slug-trailing-newline"),
    pytest.param({"author_email": 'a"@b.co'}, "author_email", id="email-quote-breaks-toml"),
    pytest.param({"author_email": 'x@y.z", evil = "1'}, "author_email", id="email-adds-toml-key"),
]

REFUSED_IN_TEXT = ['"', "\\", *(chr(code) for code in range(0x20)), "\x7f", "\x85"]
REFUSED_IN_TEXT += ["\u2028", "\u2029"]
# What a command line makes of bytes that are not UTF-8; only where refusals do not echo it.
NOT_UTF8 = "\udcff"
# Pieces an attacker reaches for: line breaks of every kind, quotes, escapes, comment and
# section markers, template syntax, specifiers, look-alikes, long runs.
PIECES = [
    *REFUSED_IN_TEXT,
    "\r\n",
    "'",
    "$",
    "${HOME}",
    "%",
    "%n",
    "#",
    ";",
    "{",
    "}",
    "{{ 7 * 7 }}",
    "{% raw %}",
    "`",
    "[Service]",
    "ExecStartPre=+/bin/true",
    "\n[Service]\nUser=root",
    " ",
    "\u00a0",
    "\u3000",
    "\ufeff",
    "\u202e",
    "\u0430",
    "é",
    "😀",
    "\x9b",
    "-",
    "_",
    ".",
    "*",
    "@",
    "x" * 300,
]


def _is_clean(text: str) -> bool:
    return not ('"' in text or "\\" in text or re.search(CONTROL_PATTERN, text))


clean_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]).filter(_is_clean), max_size=40
)
hostile_text = st.lists(st.one_of(st.text(max_size=6), st.sampled_from(PIECES)), max_size=6).map(
    "".join
)


def spliced(valid: st.SearchStrategy[str], pieces: list[str]) -> st.SearchStrategy[str]:
    """A valid answer with one piece put in at any place, the ends included."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        base = draw(valid)
        at = draw(st.integers(0, len(base)))
        return base[:at] + draw(st.sampled_from(pieces)) + base[at:]

    return build()


slugs = st.from_regex(r"[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?", fullmatch=True)
packages = st.from_regex(r"[a-z_][a-z0-9_]{0,19}", fullmatch=True)
emails = st.one_of(
    st.emails(), st.from_regex(r"[a-z0-9.+_'-]{1,12}@[a-z0-9-]{1,12}\.[a-z]{2,6}", fullmatch=True)
)
server_names = st.lists(
    st.from_regex(NGINX_NAME_PATTERN.removeprefix("^").removesuffix(r"\Z"), fullmatch=True),
    min_size=1,
    max_size=3,
).map(" ".join)


def mostly(usual: st.SearchStrategy[object], odd: st.SearchStrategy[object]) -> st.SearchStrategy:
    """`usual` seven times in eight: enough whole answer sets pass to be rendered and compared."""
    return st.integers(0, 7).flatmap(lambda roll: odd if roll == 0 else usual)


# Answers that pass, odd as they may be.
USUAL: Mapping[str, st.SearchStrategy[object]] = {
    "project_name": clean_text,
    "project_slug": slugs,
    "package_name": packages,
    "description": clean_text,
    "author_name": clean_text,
    "author_email": emails,
    "nginx_server_name": server_names,
}
# Answers as a user might type them: mostly valid and odd, sometimes hostile.
WILD: Mapping[str, st.SearchStrategy[object]] = {
    "project_name": mostly(clean_text, hostile_text),
    "project_slug": mostly(slugs, st.one_of(spliced(slugs, PIECES), hostile_text)),
    "package_name": mostly(packages, st.one_of(spliced(packages, PIECES), st.just("class"))),
    "description": mostly(clean_text, hostile_text),
    "author_name": mostly(clean_text, hostile_text),
    "author_email": mostly(emails, spliced(emails, PIECES)),
    "nginx_server_name": mostly(server_names, spliced(server_names, PIECES)),
}
# Every character the validators let through that a generated file might mind.
HOSTILE_BUT_VALID = {
    "project_name": "Ünïcode it's 100% {{ 7 * 7 }} ${HOME} #;[Service] \u2139\u00a0😀 \u202e",
    "project_slug": ("ss" + "-x" * NAME_MAX_LENGTH)[:NAME_MAX_LENGTH],
    "package_name": "p" * NAME_MAX_LENGTH,
    "description": "'quotes', `ticks`, %n and %% specifiers, {% raw %}, \x9b, Заказы",
    "author_name": "O'Brien & Søn; [Project]",
    "author_email": "o'brien+tag{x}@example.com",
    "nginx_server_name": "*.example.com .example.org www.example.* _",
}
# Answers each question refuses whatever else is answered.
REFUSED: Mapping[str, st.SearchStrategy[object]] = {
    "project_name": spliced(clean_text, [*REFUSED_IN_TEXT, NOT_UTF8]),
    "project_slug": st.one_of(
        spliced(slugs, [*REFUSED_IN_TEXT, "_", "A", ".", " ", "é"]),
        slugs.map(lambda slug: slug + "-"),
        slugs.map(lambda slug: slug + "\n"),
        slugs.map(lambda slug: slug.ljust(NAME_MAX_LENGTH + 1, "x")),
    ),
    "package_name": st.one_of(
        spliced(packages, [*REFUSED_IN_TEXT, "-", "A", ".", " ", "é"]),
        packages.map(lambda package: "1" + package),
        packages.map(lambda package: package.ljust(NAME_MAX_LENGTH + 1, "x")),
        st.sampled_from(["and", "class", "def", "import", "yield"]),
    ),
    "description": spliced(clean_text, [*REFUSED_IN_TEXT, NOT_UTF8]),
    "author_name": spliced(clean_text, [*REFUSED_IN_TEXT, NOT_UTF8]),
    "author_email": st.one_of(
        spliced(emails, [*REFUSED_IN_TEXT, " ", "@"]), hostile_text.filter(lambda t: "@" not in t)
    ),
    "python_version": st.one_of(
        spliced(st.sampled_from(["3.13", "3.12", "3.11"]), PIECES),
        st.sampled_from(["3.10", "3.14", ""]),
    ),
    "targets": st.one_of(
        st.just(["kubernetes"]),
        st.lists(spliced(st.sampled_from(ALL_TARGETS), PIECES), min_size=1, max_size=2),
    ),
    "features": st.lists(
        spliced(st.sampled_from(questions()["features"].choices), PIECES), min_size=1, max_size=2
    ),
    "systemd_workers": st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=MAX_WORKERS + 1),
        st.sampled_from(["x", "1.5", "", "4 4", "0x10"]),
    ),
    "nginx_server_name": st.one_of(
        # Not "*": put before ".example.com" it makes a valid wildcard.
        spliced(server_names, [*REFUSED_IN_TEXT, "  ", "/", "~", "é", ":"]),
        server_names.map(lambda names: names + " "),
        server_names.map(lambda names: " " + names),
    ),
}


@dataclass
class Tally:
    """Figures the run prints: what was tried and what happened to it."""

    examples: int = 0
    refusals: int = 0
    renders: int = 0
    files_compared: int = 0
    injected_lines: int = 0
    questions_refused: dict[str, int] = field(default_factory=dict)

    def report(self, label: str) -> str:
        refused = ", ".join(f"{name} {n}" for name, n in sorted(self.questions_refused.items()))
        return (
            f"{label}: {self.examples} examples, {self.refusals} refused ({refused}), "
            f"{self.renders} rendered, {self.files_compared} files compared, "
            f"{self.injected_lines} injected lines"
        )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template's working tree outside git: copier renders it in place, without a clone."""
    root = tmp_path_factory.mktemp("template")
    shutil.copy(REPO_ROOT / "copier.yml", root)
    shutil.copytree(REPO_ROOT / "template", root / "template")
    return root


@pytest.fixture(scope="module")
def scratch() -> Iterator[Callable[[], Path]]:
    """A fresh, not yet existing destination per example (hypothesis runs many per test)."""
    base = Path(tempfile.mkdtemp(prefix="bulwark-answers-"))
    count = iter(range(sys.maxsize))
    try:
        yield lambda: base / f"svc{next(count)}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a self-signed pair, for nginx -t on a TLS site."""
    base = tmp_path_factory.mktemp("cert")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=example.com", "-keyout", str(base / "privkey.pem")),
            *("-out", str(base / "fullchain.pem")),
        ],
        capture_output=True,
        check=True,
    )
    return base


def render(template: Path, dest: Path, answers: Mapping[str, object]) -> None:
    copier.run_copy(str(template), dest, data=dict(answers), defaults=True, quiet=True)


def tree(root: Path) -> dict[str, str]:
    # Bytes decoded as they are: read_text() would turn a lone \r into \n.
    return {
        str(path.relative_to(root)): path.read_bytes().decode("utf-8")
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def sentinel_trees(template: Path, scratch: Callable[[], Path]) -> Callable[[int], dict[str, str]]:
    """The tree rendered with sentinel answers under CHOICES[index], rendered once."""
    trees: dict[int, dict[str, str]] = {}

    def get(index: int) -> dict[str, str]:
        if index not in trees:
            dest = scratch()
            render(template, dest, {**CHOICES[index], **SENTINELS})
            trees[index] = tree(dest)
        return trees[index]

    return get


def recorded_answers(text: str) -> dict[str, object]:
    answers: dict[str, object] = yaml.safe_load(text)
    return answers


def systemd_problems(unit: Path) -> list[str]:
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    # The install paths (/opt/..., /etc/...) do not exist on a build machine.
    absent_install_path = ("No such file or directory", "is not executable")
    return [
        line
        for line in verified.stderr.splitlines()
        if line.strip() and not any(reason in line for reason in absent_install_path)
    ]


def nginx_accepts(root: Path, slug: str, certificate: Path, prefix: Path) -> None:
    site = nginx.site_file(root).read_text(encoding="utf-8")
    prefix.mkdir()
    tested = prefix / "site.conf"
    tested.write_text(site.replace(f"/etc/ssl/{slug}/", f"{certificate}/"), encoding="utf-8")
    config = prefix / "nginx.conf"
    config.write_text(nginx.main_config(prefix, tested))
    nginx.check(config, prefix)


def check_render(
    dest: Path,
    answers: Mapping[str, object],
    choices: int,
    sentinel_trees: Callable[[int], dict[str, str]],
    certificate: Path,
    tally: Tally,
) -> None:
    """The rendered tree is the sentinel tree with the answers put in, line for line."""
    rendered = tree(dest)
    recorded = recorded_answers(rendered.pop(".copier-answers.yml"))
    for name, value in answers.items():
        if name in TEXT_QUESTIONS:
            assert recorded[name] == value, f"{name} was not recorded as given"
    real = {SENTINELS[name]: str(recorded[name]) for name in TEXT_QUESTIONS}
    real[SENTINELS["package_name"].upper()] = str(recorded["package_name"]).upper()
    swap = re.compile("|".join(re.escape(sentinel) for sentinel in real))

    def put(text: str) -> str:
        return swap.sub(lambda match: real[match.group(0)], text)

    sentinel = {put(path): text for path, text in sentinel_trees(choices).items()}
    sentinel.pop(".copier-answers.yml")
    assert sorted(rendered) == sorted(sentinel)
    for path, text in rendered.items():
        tally.files_compared += 1
        # splitlines() breaks at every line boundary any reader knows (\r, \x85, \u2028, ...).
        injected = len(text.splitlines()) - len(sentinel[path].splitlines())
        tally.injected_lines += abs(injected)
        assert injected == 0, f"{path}: {injected:+d} lines"
        assert text == put(sentinel[path]), path
    slug = str(recorded["project_slug"])
    assert systemd_problems(dest / f"deploy/systemd/{slug}.service") == []
    nginx_accepts(dest, slug, certificate, dest.parent / f"{dest.name}-nginx")
    tally.renders += 1


def refusal_checked(
    answers: Mapping[str, object],
    problems: list[str],
    template: Path,
    scratch: Callable[[], Path],
    capsys: pytest.CaptureFixture[str],
    tally: Tally,
) -> None:
    """`bulwark new` exits 2 naming each refused question, and so does copier itself; neither
    writes anything."""
    assert all(problem.split(":")[0] in answers for problem in problems)
    dest = scratch()
    capsys.readouterr()
    items = [f"{name}={as_data(value)}" for name, value in answers.items()]
    assert main(["new", str(dest), "--defaults", *(f"--data={item}" for item in items)]) == 2
    assert not dest.exists()
    assert capsys.readouterr().err.startswith(problems[0].split(":")[0] + ":")

    # Copier's own words: a validator's message, or its refusal of a choice or an int.
    with pytest.raises(
        ValueError, match=r"^(Validation error|Invalid choice|invalid literal)"
    ) as refusal:
        render(template, dest, answers)
    assert not dest.exists()
    if refusal.value.args[0].startswith("Validation error"):
        # A copier.yml validator spoke first: the generator said the same words first.
        assert problems[0] in str(refusal.value)
    tally.refusals += 1
    for problem in problems:
        question = problem.split(":")[0]
        tally.questions_refused[question] = tally.questions_refused.get(question, 0) + 1


def as_data(value: object) -> str:
    """An answer as `--data KEY=VALUE` takes it: lists as JSON."""
    return json.dumps(value) if isinstance(value, list) else str(value)


@pytest.mark.parametrize(("answers", "question"), EXPLOITS)
def test_reported_exploits_are_refused(
    answers: dict[str, object],
    question: str,
    template: Path,
    scratch: Callable[[], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    problems = validate(answers)
    assert [problem.split(":")[0] for problem in problems] == [question]
    refusal_checked(answers, problems, template, scratch, capsys, Tally())


def test_long_package_name_passes_nginx(certificate: Path, tmp_path: Path) -> None:
    """The site takes a package name of any length: 36+ characters once made an nginx variable
    name longer than nginx allows. Rendered alone, as the validators stop long names first."""
    site = next((REPO_ROOT / "template" / "deploy").glob("*nginx*/*.conf.jinja"))
    answers = {
        **SENTINELS,
        "package_name": "p" * 80,
        "env_prefix": "P" * 80 + "_",
        "nginx_tls": True,
    }
    rendered = tmp_path / "svc" / "deploy" / "nginx" / "xslugx.conf"
    rendered.parent.mkdir(parents=True)
    rendered.write_text(jinja2.Template(site.read_text(encoding="utf-8")).render(answers))
    assert "p" * 80 in rendered.read_text()
    nginx_accepts(tmp_path / "svc", "xslugx", certificate, tmp_path / "nginx")


def test_the_oracle_sees_an_injected_line(
    template: Path,
    scratch: Callable[[], Path],
    sentinel_trees: Callable[[int], dict[str, str]],
    certificate: Path,
    tmp_path: Path,
) -> None:
    """With project_name's validator taken out, the reported exploit renders and is caught."""
    unguarded = tmp_path / "unguarded"
    shutil.copytree(template, unguarded)
    config = yaml.safe_load((unguarded / "copier.yml").read_text(encoding="utf-8"))
    del config["project_name"]["validator"]
    (unguarded / "copier.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    answers = {
        **CHOICES[1],
        **SENTINELS,
        "project_name": "Evil\r[Service]\rExecStartPre=+/usr/bin/touch /x",
    }
    dest = scratch()
    render(unguarded, dest, answers)
    with pytest.raises(AssertionError, match=r"\+2 lines"):
        check_render(dest, answers, 1, sentinel_trees, certificate, Tally())


def answer_sets(strategies: Mapping[str, st.SearchStrategy[object]]) -> st.SearchStrategy:
    """Sentinel-free answers for every text question, drawn from `strategies`, under one of
    CHOICES; each text question is sometimes left to its default."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[int, dict[str, object]]:
        index = draw(st.sampled_from(range(len(CHOICES))))
        choices = CHOICES[index]
        answers: dict[str, object] = {
            **{key: value for key, value in choices.items() if key != "systemd_workers"},
            # Ways of writing the same number that copier's int() accepts.
            "systemd_workers": draw(
                st.sampled_from([w := choices["systemd_workers"], str(w), f" {w}\n", f"+{w}"])
            ),
        }
        for name in TEXT_QUESTIONS:
            if draw(st.integers(0, 4)):
                answers[name] = draw(strategies[name])
        return index, answers

    return build()


FUZZ = settings(
    deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)


def test_wild_answers_are_refused_or_rendered_verbatim(
    template: Path,
    scratch: Callable[[], Path],
    sentinel_trees: Callable[[int], dict[str, str]],
    certificate: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tally = Tally()

    @settings(FUZZ, max_examples=14)
    @given(drawn=answer_sets(WILD))
    def run(drawn: tuple[int, dict[str, object]]) -> None:
        index, answers = drawn
        tally.examples += 1
        if problems := validate(answers):
            refusal_checked(answers, problems, template, scratch, capsys, tally)
            return
        dest = scratch()
        try:
            render(template, dest, answers)
        except ValueError as error:
            refused = error
        else:
            check_render(dest, answers, index, sentinel_trees, certificate, tally)
            return
        # Only a default derived from an answer can fail where the answers passed (the slug
        # "class" gives the package "class"); copier names it and writes nothing.
        question = re.search(r"question '(\w+)'", str(refused))
        assert question, refused
        assert question.group(1) not in answers, refused
        assert not dest.exists()
        tally.refusals += 1

    run()
    with capsys.disabled():
        print(f"\n{tally.report('wild answers')}")
    # Both outcomes were exercised: the strategies have not drifted into all-refused.
    assert tally.renders
    assert tally.refusals
    assert tally.injected_lines == 0


def test_refused_answers_name_their_question(
    template: Path, scratch: Callable[[], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tally = Tally()

    @settings(FUZZ, max_examples=80)
    @given(
        drawn=answer_sets(WILD),
        poisoned=st.lists(st.sampled_from(sorted(REFUSED)), min_size=1, max_size=2, unique=True),
        data=st.data(),
    )
    def run(drawn: tuple[int, dict[str, object]], poisoned: list[str], data: st.DataObject) -> None:
        _, answers = drawn
        for name in poisoned:
            answers[name] = data.draw(REFUSED[name], label=name)
        tally.examples += 1
        problems = validate(answers)
        assert set(poisoned) <= {problem.split(":")[0] for problem in problems}
        refusal_checked(answers, problems, template, scratch, capsys, tally)

    run()
    with capsys.disabled():
        print(f"\n{tally.report('refused answers')}")
    assert tally.refusals == tally.examples


def make(project: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    # The project brings its own virtualenv and must not inherit this one or a make session.
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAKE", "MFLAGS")) and key != "VIRTUAL_ENV"
    }
    return subprocess.run(
        ["make", *targets],
        cwd=project,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_projects_from_odd_answers_pass_their_own_checks(
    template: Path,
    scratch: Callable[[], Path],
    sentinel_trees: Callable[[int], dict[str, str]],
    certificate: Path,
) -> None:
    """ruff, ruff format, mypy --strict and every deployment file's own validator."""
    checked: list[str] = []

    @settings(FUZZ, max_examples=1)
    @example(drawn=(0, {**CHOICES[0], **HOSTILE_BUT_VALID}))
    @given(drawn=answer_sets(USUAL))
    def run(drawn: tuple[int, dict[str, object]]) -> None:
        index, answers = drawn
        dest = scratch()
        try:
            render(template, dest, answers)
        except ValueError:
            return  # a slug such as "class" derives the package "class": refused, as it should
        check_render(dest, answers, index, sentinel_trees, certificate, Tally())
        done = make(dest, "lint", "typecheck", "manifests-check")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        checked.append(str(answers.get("package_name", "")))

    run()
    assert checked
