"""Answers to copier.yml's questions: read from the command line and checked before copier runs.

Copier validates every answer itself; this earlier pass lists all problems at once and refuses
before anything is written. Derived defaults (the package name from the slug, ...) stay
copier's job: only answers given explicitly are checked here.
"""

import functools
import json
import keyword
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COPIER_YML = REPO_ROOT / "copier.yml"

# The same patterns and limits as copier.yml's validators (tests/test_questions.py keeps them in
# step). `\Z`, not `$`: `$` also matches before a trailing line break.
# Surrogates: what is left of bytes that are not UTF-8 in a command line; no file can hold them.
CONTROL_PATTERN = r"[\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]"
SLUG_PATTERN = r"^[a-z](?:[a-z0-9-]*[a-z0-9])?\Z"
# Generated code is formatted for names up to this length (longer ones push lines past ruff's
# 100 columns).
NAME_MAX_LENGTH = 20
PACKAGE_PATTERN = r"^[a-z_][a-z0-9_]*\Z"
_EMAIL_PART = r'[^@\s"\\\x00-\x1f\x7f\ud800-\udfff]+'
EMAIL_PATTERN = rf"^{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}\Z"
_HOST = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
NGINX_NAME_PATTERN = rf"^(?:(?:\*\.|\.)?{_HOST}|{_HOST}\.\*)\Z"
MAX_WORKERS = 64


class AnswerError(ValueError):
    """An answer given on the command line that cannot be used as it stands."""


@dataclass(frozen=True)
class Question:
    """What the generator needs to know about one copier question."""

    name: str
    multiselect: bool
    choices: tuple[str, ...]  # empty when any value is allowed


@functools.cache
def questions() -> Mapping[str, Question]:
    """The questions a user may answer, in copier.yml order.

    Settings (`_...`) and computed values (`when: false`) are left out: they are not answers.
    """
    config = yaml.safe_load(COPIER_YML.read_text(encoding="utf-8"))
    found: dict[str, Question] = {}
    for name, spec in config.items():
        if name.startswith("_") or not isinstance(spec, dict) or spec.get("when") is False:
            continue
        raw_choices = spec.get("choices", ())
        values = raw_choices.values() if isinstance(raw_choices, dict) else raw_choices
        found[name] = Question(
            name=name,
            multiselect=bool(spec.get("multiselect", False)),
            choices=tuple(str(value) for value in values),
        )
    return found


def parse_data(items: Sequence[str]) -> dict[str, object]:
    """Turn `KEY=VALUE` items into copier data; multiselect values become lists.

    A list is written comma-separated (`docker,nginx`, empty for none) or as JSON (`["docker"]`).
    """
    known = questions()
    data: dict[str, object] = {}
    for item in items:
        key, separator, value = item.partition("=")
        key = key.strip()
        if not separator:
            raise AnswerError(f'--data "{item}": expected KEY=VALUE')
        if key not in known:
            raise AnswerError(f'--data: unknown question "{key}" (valid: {", ".join(known)})')
        data[key] = _parse_list(key, value) if known[key].multiselect else value
    return data


def _parse_list(key: str, value: str) -> list[str]:
    if not value.strip().startswith("["):
        return [part.strip() for part in value.split(",") if part.strip()]
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise AnswerError(f"--data {key}: not a JSON list ({error})") from None
    if not isinstance(parsed, list) or not all(isinstance(entry, str) for entry in parsed):
        raise AnswerError(f"--data {key}: expected a JSON list of strings, got {value}")
    return parsed


def merge(
    preset: Mapping[str, object],
    targets: Sequence[str],
    features: Sequence[str],
    data: Mapping[str, object],
) -> dict[str, object]:
    """Combine answer sources; later ones win: preset, then --target/--feature, then --data.

    Flags replace the preset's list rather than extend it, so the result reads off the
    command line.
    """
    answers = dict(preset)
    if targets:
        answers["targets"] = list(targets)
    if features:
        answers["features"] = list(features)
    answers.update(data)
    return answers


def validate(answers: Mapping[str, object]) -> list[str]:
    """Every problem with the given answers, one message each naming the question and rule."""
    known = questions()
    problems = [
        f"{name}: not a question of this template (valid: {', '.join(known)})"
        for name in answers
        if name not in known
    ]
    for name, question in known.items():
        if name in answers:
            problems.extend(_problems(question, answers[name]))
    return problems


def _problems(question: Question, value: object) -> list[str]:
    if question.multiselect and not isinstance(value, list | tuple):
        return [f"{question.name}: expected a list of choices, got {value!r}"]
    picked = [str(entry) for entry in value] if isinstance(value, list | tuple) else [str(value)]
    problems = [
        f'{question.name}: "{entry}" is not a choice (valid: {", ".join(question.choices)})'
        for entry in picked
        if question.choices and entry not in question.choices
    ]
    rule = _RULES.get(question.name)
    if rule is not None and (problem := rule(question.name, value)):
        problems.append(problem)
    return problems


def _matches(pattern: str, rule: str) -> Callable[[str, object], str | None]:
    # re.search, like copier's `regex_search` filter, so both agree on every input.
    def check(name: str, value: object) -> str | None:
        return None if re.search(pattern, str(value)) else f'{name}: "{value}" {rule}'

    return check


def _plain_text(name: str, value: object) -> str | None:
    text = str(value)
    if '"' in text or "\\" in text or re.search(CONTROL_PATTERN, text):
        return (
            f"{name}: must not contain double quotes, backslashes, control characters such as "
            "line breaks, or bytes that are not UTF-8 (it is written into generated files as it is)"
        )
    return None


def _project_name(name: str, value: object) -> str | None:
    if not str(value).strip():
        return f"{name}: must not be empty"
    return _plain_text(name, value)


_slug_shape = _matches(
    SLUG_PATTERN,
    "must be lowercase, start with a letter, end with a letter or digit and use only [a-z0-9-]",
)
_identifier = _matches(PACKAGE_PATTERN, "must be a lowercase Python identifier ([a-z_][a-z0-9_]*)")


def _too_long(name: str, value: object) -> str | None:
    if len(str(value)) > NAME_MAX_LENGTH:
        return (
            f'{name}: "{value}" must be at most {NAME_MAX_LENGTH} characters '
            "(generated code is formatted for names up to that length)"
        )
    return None


def _project_slug(name: str, value: object) -> str | None:
    return _slug_shape(name, value) or _too_long(name, value)


def _package_name(name: str, value: object) -> str | None:
    if problem := _identifier(name, value) or _too_long(name, value):
        return problem
    if keyword.iskeyword(str(value)):
        return f'{name}: "{value}" is a Python keyword, which cannot be imported'
    return None


def _systemd_workers(name: str, value: object) -> str | None:
    # int(), as copier casts an int question's answer; copier's own refusal of a non-number
    # does not name the question, so this one must.
    try:
        workers = value if isinstance(value, int) else int(str(value))
    except ValueError:
        workers = None
    if workers is None or not 0 <= workers <= MAX_WORKERS:
        shown = value if workers is None else workers
        return f"{name}: must be between 0 (one per CPU core) and {MAX_WORKERS}, got {shown}"
    return None


def _server_names(name: str, value: object) -> str | None:
    # Split on single spaces: a doubled, leading or trailing space leaves an empty name.
    if all(re.search(NGINX_NAME_PATTERN, part) for part in str(value).split(" ")):
        return None
    return (
        f'{name}: "{value}" must be host names separated by single spaces '
        "(wildcards as *.example.com, .example.com or www.example.*)"
    )


def _kubernetes_needs_docker(name: str, value: object) -> str | None:
    targets = value if isinstance(value, list | tuple) else ()
    if "kubernetes" in targets and "docker" not in targets:
        return (
            f'{name}: "kubernetes" needs "docker" too '
            "(the cluster runs the image the Dockerfile builds)"
        )
    return None


# One entry per validator in copier.yml, with the same wording.
_RULES: Mapping[str, Callable[[str, object], str | None]] = {
    "project_name": _project_name,
    "description": _plain_text,
    "author_name": _plain_text,
    "project_slug": _project_slug,
    "package_name": _package_name,
    "author_email": _matches(
        EMAIL_PATTERN,
        "is not an email address (no spaces, quotes, backslashes or control characters)",
    ),
    "targets": _kubernetes_needs_docker,
    "systemd_workers": _systemd_workers,
    "nginx_server_name": _server_names,
}
