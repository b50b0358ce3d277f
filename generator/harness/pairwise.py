"""Pairwise-covering answer sets over copier.yml's targets, features and Python versions.

Every pair of (option, value) that some valid answer set can hold appears in at least one
row, so a bug that needs two choices together shows up in the matrix.
Computed from copier.yml at run time: a new feature joins the matrix without an edit here.

Written by hand (greedy, AETG-style) rather than with allpairspy: allpairspy judges its
constraint on partial rows, and copier.yml's cross-field rules (`validate`) can only judge a
complete answer set.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from generator.answers import questions, validate

# Tries per uncovered pair to find a valid row holding it; a pair no try can place is
# treated as impossible (e.g. kubernetes without docker).
_TRIES_PER_PAIR = 200
# Candidates drawn per row; the one covering most uncovered pairs is kept.
_CANDIDATES = 40


@dataclass(frozen=True, slots=True)
class Factor:
    """One dimension of the matrix: an on/off choice (ON_OFF), or the Python version."""

    name: str
    values: tuple[object, ...]


ON_OFF: tuple[object, ...] = (True, False)
Pair = tuple[tuple[str, object], tuple[str, object]]
Row = dict[str, object]


def factors() -> list[Factor]:
    """Each target and each feature on/off, and every Python version, from copier.yml."""
    known = questions()
    return [
        *(Factor(f"target:{choice}", ON_OFF) for choice in known["targets"].choices),
        *(Factor(f"feature:{choice}", ON_OFF) for choice in known["features"].choices),
        Factor("python_version", known["python_version"].choices),
    ]


def answers(row: Mapping[str, object]) -> dict[str, object]:
    """The copier data of one matrix row."""
    return {
        "targets": selected(row, "target"),
        "features": selected(row, "feature"),
        "python_version": row["python_version"],
    }


def selected(row: Mapping[str, object], kind: str) -> list[str]:
    """The choices of one multiselect question (`target` or `feature`) that a row turns on."""
    prefix = f"{kind}:"
    return [name.removeprefix(prefix) for name, on in row.items() if name.startswith(prefix) and on]


def is_valid(row: Mapping[str, object]) -> bool:
    return not validate(answers(row))


def _pairs(row: Mapping[str, object]) -> set[Pair]:
    items = sorted(row.items(), key=lambda item: item[0])
    return {(a, b) for a, b in itertools.combinations(items, 2)}


def _random_row(rng: random.Random, dims: Sequence[Factor], fixed: Mapping[str, object]) -> Row:
    return {d.name: fixed[d.name] if d.name in fixed else rng.choice(d.values) for d in dims}


def covering_rows(dims: Sequence[Factor] | None = None, *, seed: int = 0) -> list[Row]:
    """Valid rows covering every achievable pair; the same list for the same inputs and seed.

    The all-on and all-off rows come first (the `full` and `minimal` services), then greedy
    rows until no achievable pair is left uncovered.
    """
    dims = list(dims if dims is not None else factors())
    rng = random.Random(seed)
    all_on = {d.name: True if d.values == ON_OFF else d.values[0] for d in dims}
    all_off = {d.name: False if d.values == ON_OFF else d.values[-1] for d in dims}
    rows = [row for row in (all_on, all_off) if is_valid(row)]
    uncovered = {
        pair
        for a, b in itertools.combinations(sorted(dims, key=lambda d: d.name), 2)
        for pair in itertools.product(
            [(a.name, v) for v in a.values], [(b.name, v) for v in b.values]
        )
    }
    for row in rows:
        uncovered -= _pairs(row)

    while uncovered:
        target = min(uncovered, key=repr)  # deterministic choice of the pair to place
        best: Row | None = None
        best_gain = 0
        valid_seen = 0
        for _attempt in range(_TRIES_PER_PAIR):
            candidate = _random_row(rng, dims, dict(target))
            if not is_valid(candidate):
                continue
            valid_seen += 1
            gain = len(_pairs(candidate) & uncovered)
            if gain > best_gain:
                best, best_gain = candidate, gain
            if valid_seen >= _CANDIDATES:
                break
        if best is None:
            uncovered.discard(target)  # no valid answer set can hold this pair
            continue
        rows.append(best)
        uncovered -= _pairs(best)
    return rows
