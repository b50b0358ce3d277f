"""copier.yml's validators refuse bad answers with nothing written; answers.py agrees with them."""

import keyword
from pathlib import Path

import copier
import jinja2
import pytest
import yaml
from conftest import REPO_ROOT
from jinja2 import nodes

from generator.answers import (
    CONTROL_PATTERN,
    EMAIL_PATTERN,
    MAX_WORKERS,
    NAME_MAX_LENGTH,
    NGINX_NAME_PATTERN,
    PACKAGE_PATTERN,
    SLUG_PATTERN,
    AnswerError,
    merge,
    parse_data,
    questions,
    validate,
)
from generator.presets import PRESETS, get_preset

COPIER_YML = yaml.safe_load((REPO_ROOT / "copier.yml").read_text(encoding="utf-8"))

# (answers, words the refusal must name)
REFUSED = [
    pytest.param({"project_name": "  "}, ["project_name"], id="name-blank"),
    pytest.param({"project_name": 'A "quoted" name'}, ["project_name"], id="name-quote"),
    pytest.param({"description": "back\\slash"}, ["description"], id="description-backslash"),
    pytest.param({"author_name": "two\nlines"}, ["author_name"], id="author-line-break"),
    # A bare carriage return ends a line for systemd: this one would add a root command.
    pytest.param(
        {"project_name": "Evil\r[Service]\rExecStartPre=+/usr/bin/touch /x"},
        ["project_name", "control characters"],
        id="name-carriage-return",
    ),
    pytest.param({"project_name": "tab\there"}, ["project_name"], id="name-tab"),
    pytest.param({"description": "nul\x00"}, ["description"], id="description-nul"),
    pytest.param({"description": "del\x7f"}, ["description"], id="description-del"),
    pytest.param({"author_name": "next\x85line"}, ["author_name"], id="author-next-line"),
    pytest.param({"project_name": "line\u2028sep"}, ["project_name"], id="name-line-separator"),
    pytest.param({"description": "para\u2029sep"}, ["description"], id="description-para-sep"),
    pytest.param({"author_name": "not-utf8\udcff"}, ["author_name"], id="author-surrogate"),
    pytest.param({"project_slug": "1bad"}, ["project_slug"], id="slug-digit-first"),
    pytest.param({"project_slug": "Bad"}, ["project_slug"], id="slug-uppercase"),
    pytest.param({"project_slug": "bad_slug"}, ["project_slug"], id="slug-underscore"),
    pytest.param({"project_slug": "evil\n"}, ["project_slug"], id="slug-trailing-newline"),
    pytest.param({"project_slug": "evil-"}, ["project_slug"], id="slug-trailing-dash"),
    pytest.param(
        {"project_slug": "a" * (NAME_MAX_LENGTH + 1)},
        ["project_slug", f"at most {NAME_MAX_LENGTH}"],
        id="slug-too-long",
    ),
    pytest.param({"package_name": "9x"}, ["package_name"], id="package-digit-first"),
    pytest.param({"package_name": "evil\n"}, ["package_name"], id="package-trailing-newline"),
    pytest.param({"package_name": "class"}, ["package_name", "keyword"], id="package-keyword"),
    pytest.param(
        {"package_name": "p" * (NAME_MAX_LENGTH + 1)},
        ["package_name", f"at most {NAME_MAX_LENGTH}"],
        id="package-too-long",
    ),
    pytest.param({"author_email": "nope"}, ["author_email"], id="email-without-at"),
    pytest.param({"author_email": 'a"b@example.com'}, ["author_email"], id="email-quote"),
    pytest.param({"author_email": "a\\b@example.com"}, ["author_email"], id="email-backslash"),
    pytest.param({"author_email": "a@example.com\n"}, ["author_email"], id="email-newline"),
    pytest.param({"author_email": "a\x01@example.com"}, ["author_email"], id="email-control"),
    pytest.param(
        {"targets": ["nginx"], "nginx_server_name": "api.example.com\n"},
        ["nginx_server_name"],
        id="server-name-newline",
    ),
    pytest.param(
        {"targets": ["nginx"], "nginx_server_name": "a  b"},
        ["nginx_server_name"],
        id="server-name-double-space",
    ),
    pytest.param(
        {"targets": ["nginx"], "nginx_server_name": "*.example.*"},
        ["nginx_server_name"],
        id="server-name-two-wildcards",
    ),
    pytest.param(
        {"targets": ["nginx"], "nginx_server_name": "a*b"},
        ["nginx_server_name"],
        id="server-name-inner-wildcard",
    ),
    pytest.param(
        {"targets": ["systemd"], "systemd_workers": MAX_WORKERS + 1},
        ["systemd_workers"],
        id="workers-too-many",
    ),
    pytest.param(
        {"targets": ["kubernetes"]}, ["targets", "kubernetes", "docker"], id="k8s-without-docker"
    ),
    pytest.param({"python_version": "3.10"}, ["python_version"], id="python-not-a-choice"),
    pytest.param({"features": ["nope"]}, ["features"], id="feature-not-a-choice"),
]

ACCEPTED = [
    pytest.param({"project_slug": "a"}, id="slug-one-letter"),
    pytest.param({"project_slug": "a-1", "package_name": "_a1"}, id="slug-and-package"),
    pytest.param({"project_slug": "a" * NAME_MAX_LENGTH}, id="slug-longest"),
    pytest.param({"package_name": "p" * NAME_MAX_LENGTH}, id="package-longest"),
    pytest.param({"package_name": "match"}, id="package-soft-keyword"),
    pytest.param({"author_email": "a@b.co"}, id="email"),
    pytest.param({"author_email": "ünï+tag@example.com"}, id="email-unicode"),
    pytest.param(
        {"targets": ["nginx"], "nginx_server_name": "*.example.com .example.org www.example.* _"},
        id="server-name-wildcards",
    ),
    pytest.param({"targets": ["systemd"], "systemd_workers": " 4\n"}, id="workers-padded"),
    pytest.param({"project_name": "Ünïcode it's", "description": "Fast & 'safe'"}, id="text"),
    pytest.param({"targets": ["docker", "kubernetes"]}, id="k8s-with-docker"),
    pytest.param({"targets": [], "features": []}, id="nothing-selected"),
    pytest.param({"python_version": "3.11"}, id="python-choice"),
]


@pytest.mark.parametrize(("answers", "words"), REFUSED)
def test_copier_and_validate_refuse(
    answers: dict[str, object], words: list[str], build_dir: Path
) -> None:
    dest = build_dir / "svc"
    with pytest.raises(ValueError, match=words[0]) as refusal:
        copier.run_copy(
            str(REPO_ROOT), dest, data=answers, defaults=True, vcs_ref="HEAD", quiet=True
        )
    assert not dest.exists()
    assert all(word in str(refusal.value) for word in words)

    problems = validate(answers)
    assert len(problems) == 1
    assert all(word in problems[0] for word in words)
    if str(refusal.value).startswith("Validation error"):
        # A copier.yml validator spoke: the early pass must say the same words.
        assert problems[0] in str(refusal.value)


@pytest.mark.parametrize("answers", ACCEPTED)
def test_copier_and_validate_accept(answers: dict[str, object], build_dir: Path) -> None:
    dest = build_dir / "svc"
    copier.run_copy(
        str(REPO_ROOT), dest, data=answers, defaults=True, vcs_ref="HEAD", quiet=True, pretend=True
    )
    assert validate(answers) == []


def regex_searches(question: str) -> list[object]:
    """The patterns a copier.yml validator passes to `regex_search`, in order.

    Parsed as Jinja reads them, so escaping differences in copier.yml do not matter.
    """
    validator = jinja2.Environment().parse(COPIER_YML[question]["validator"])
    searches = [node for node in validator.find_all(nodes.Filter) if node.name == "regex_search"]
    return [search.args[0].as_const() for search in searches]


@pytest.mark.parametrize(
    ("question", "patterns"),
    [
        ("project_name", [CONTROL_PATTERN]),
        ("project_slug", [SLUG_PATTERN]),
        ("package_name", [PACKAGE_PATTERN]),
        ("description", [CONTROL_PATTERN]),
        ("author_name", [CONTROL_PATTERN]),
        ("author_email", [EMAIL_PATTERN]),
        ("nginx_server_name", [NGINX_NAME_PATTERN]),
    ],
)
def test_patterns_are_copier_ymls(question: str, patterns: list[str]) -> None:
    # The cases above cannot reach every input; the patterns themselves must not drift.
    assert regex_searches(question) == patterns


def validator_constants(question: str) -> list[object]:
    validator = jinja2.Environment().parse(COPIER_YML[question]["validator"])
    return [node.as_const() for node in validator.find_all((nodes.Const, nodes.List))]


def test_limits_are_copier_ymls() -> None:
    assert NAME_MAX_LENGTH in validator_constants("project_slug")
    assert NAME_MAX_LENGTH in validator_constants("package_name")
    assert MAX_WORKERS in validator_constants("systemd_workers")
    # Lowercase keywords only: the identifier pattern already refuses True, None and False.
    assert [word for word in keyword.kwlist if word.islower()] in validator_constants(
        "package_name"
    )


FREE_TEXT = [
    name
    for name, spec in COPIER_YML.items()
    if isinstance(spec, dict)
    and spec.get("type") == "str"
    and "choices" not in spec
    and spec.get("when") is not False
]


@pytest.mark.parametrize("question", FREE_TEXT)
@pytest.mark.parametrize("breaker", ["\n", "\r", "\x0b", "\x85", "\u2028", "\x00"])
def test_every_free_text_question_refuses_line_breaks(question: str, breaker: str) -> None:
    """A question added later without a validator would let a line break through."""
    assert "validator" in COPIER_YML[question]
    problems = validate({question: f"ok{breaker}ok.example.com"})
    assert len(problems) == 1
    assert problems[0].startswith(f"{question}: ")


@pytest.mark.parametrize("workers", ["x", "1.5", ""])
def test_validate_refuses_workers_copier_cannot_cast(workers: str) -> None:
    """Copier's own refusal of these (int() failing) does not name the question."""
    assert validate({"systemd_workers": workers}) == [
        f"systemd_workers: must be between 0 (one per CPU core) and {MAX_WORKERS}, got {workers}"
    ]


def test_questions_leave_out_settings_and_computed_values() -> None:
    assert list(questions()) == [
        name
        for name, spec in COPIER_YML.items()
        if not name.startswith("_") and spec.get("when") is not False
    ]
    assert "env_prefix" not in questions()


def test_questions_know_choice_values_not_labels() -> None:
    assert questions()["targets"].choices == ("docker", "kubernetes", "systemd", "nginx")
    assert questions()["python_version"].choices == ("3.13", "3.12", "3.11")
    assert questions()["project_slug"].choices == ()


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["project_slug=orders"], {"project_slug": "orders"}),
        (["description=a=b"], {"description": "a=b"}),
        (["targets=docker, nginx"], {"targets": ["docker", "nginx"]}),
        (['targets=["docker", "nginx"]'], {"targets": ["docker", "nginx"]}),
        (["features="], {"features": []}),
        (["features=[]"], {"features": []}),
    ],
)
def test_parse_data(items: list[str], expected: dict[str, object]) -> None:
    assert parse_data(items) == expected


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["colour=blue"], r'unknown question "colour" \(valid: project_name, project_slug'),
        (["project_slug"], "expected KEY=VALUE"),
        (["targets=[docker"], "targets: not a JSON list"),
        (["targets=[1]"], "targets: expected a JSON list of strings"),
    ],
)
def test_parse_data_refuses(items: list[str], message: str) -> None:
    with pytest.raises(AnswerError, match=message):
        parse_data(items)


def test_merge_later_sources_replace_earlier_ones() -> None:
    preset = {"targets": ["docker"], "features": ["postgres"], "python_version": "3.12"}
    merged = merge(preset, ["systemd", "nginx"], [], {"features": [], "python_version": "3.11"})
    assert merged == {"targets": ["systemd", "nginx"], "features": [], "python_version": "3.11"}
    assert preset["targets"] == ["docker"]


def test_validate_lists_every_problem_in_question_order() -> None:
    problems = validate({"targets": ["kubernetes"], "project_slug": "1bad", "colour": "blue"})
    assert [problem.split(":")[0] for problem in problems] == ["colour", "project_slug", "targets"]


def test_validate_refuses_a_single_value_for_a_multiselect() -> None:
    assert validate({"targets": "docker"}) == ["targets: expected a list of choices, got 'docker'"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_valid(name: str) -> None:
    assert validate(get_preset(name).answers()) == []


def test_full_preset_has_every_feature_in_copier_yml() -> None:
    assert get_preset("full").features == tuple(COPIER_YML["features"]["choices"].values())


def test_unknown_preset_lists_the_valid_names() -> None:
    with pytest.raises(AnswerError, match=r'unknown preset "nope" \(valid: minimal, api-postgres'):
        get_preset("nope")
