"""The `ablation` scenario of `bulwark loadtest`: what each protection costs on a routed request.

The full stack (the routed scenario's service, its default rate limit counted but never reached
so the limiter's work shows) stays up the whole scenario; each variant, the same service with one
protection switched off, runs beside it in turn, their runs alternated, and each pair gives that
protection's marginal CPU µs per request (full - off) and rps ratio (off / full). A protection
is switched off by its setting where one exists, otherwise the service is rendered without the
feature. Every service side is a fresh render of the project's own answers at the template
commit it was generated from (edits made to the project since play no part), run on the
project's interpreter and packages. The first variant is bare FastAPI with the same route table:
the whole stack's cost, and the scenario's ratio.

Features that wire nothing into the request path (postgres, redis, cache, circuit_breaker,
offload: resources, routes and state only) cost a routed request nothing and are not measured.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from generator.harness import servers
from generator.harness.load import routed
from generator.harness.load.scenario import (
    Bench,
    Outcome,
    Scenario,
    Side,
    Verdict,
    cpu_us_per_request,
    spread,
    with_failures,
)
from generator.harness.project import Project, ServiceError

# The full stack's settings: the default limit counted on every request, never reached.
FULL_SETTINGS = routed.LIMIT_NEVER_REACHED
TABLE_TITLE = "what each protection costs a routed request"


@dataclass(frozen=True, slots=True)
class Variant:
    """The full stack with one thing off: by `settings`, by a render without `feature`
    (`render`), or everything off (`bare`: bare FastAPI, same route table)."""

    name: str
    how: str
    # The feature the project must have for the variant to mean anything (None: always).
    feature: str | None = None
    settings: tuple[tuple[str, str], ...] = ()
    render: bool = False
    bare: bool = False


VARIANTS = (
    Variant("everything", "bare FastAPI with the same route table", bare=True),
    Variant(
        "rate_limit",
        "RATE_LIMIT_DEFAULT= (the limiter stays, for routes' own limits)",
        "rate_limit",
        settings=(("RATE_LIMIT_DEFAULT", ""),),
    ),
    Variant("load_shedding", "rendered without the feature", "load_shedding", render=True),
    Variant("timeout", "rendered without the feature", "timeout", render=True),
    Variant("metrics", "rendered without the feature", "metrics", render=True),
    Variant(
        "loop_monitor",
        "LOOP_MONITOR_ENABLED=false",
        "loop_monitor",
        settings=(("LOOP_MONITOR_ENABLED", "false"),),
    ),
    Variant(
        "access_log",
        "ACCESS_LOG_SAMPLE_RATE=0 (errors and slow requests still logged)",
        settings=(("ACCESS_LOG_SAMPLE_RATE", "0"),),
    ),
)


def plan(features: Sequence[str]) -> list[Variant]:
    """The variants a project with `features` is measured with, in order."""
    return [v for v in VARIANTS if v.feature is None or v.feature in features]


def render(project: Project, dest: Path, without: str | None = None) -> Path:
    """The project's answers rendered into `dest` (less `without`, and no deploy targets: they
    play no part in a request) from the template and commit it was generated from; the
    directory to put first on the server's import path."""
    import copier  # imported here: only this scenario renders

    answers = yaml.safe_load((project.root / ".copier-answers.yml").read_text(encoding="utf-8"))
    data = {key: value for key, value in answers.items() if not key.startswith("_")}
    data["features"] = [f for f in data.get("features") or [] if f != without]
    data["targets"] = []
    try:
        copier.run_copy(
            str(answers["_src_path"]),
            dest,
            data=data,
            defaults=True,
            vcs_ref=str(answers.get("_commit") or "HEAD"),
            quiet=True,
        )
    except Exception as exc:  # copier raises many kinds; any of them means no variant
        raise ServiceError(f"rendering {project.root} without {without}: {exc}") from exc
    return dest / "src"


def entry_for(variant: Variant, full: Side, off: Side) -> dict[str, Any]:
    """One row of the table: the variant's marginal cost against the full runs beside it."""
    on_us = cpu_us_per_request(full.runs, full.cpu_s)
    off_us = cpu_us_per_request(off.runs, off.cpu_s)
    row = {
        "off": variant.name,
        "how": variant.how,
        "cpu_us_full": round(statistics.median(on_us), 1),
        "cpu_us_off": round(statistics.median(off_us), 1),
        "marginal_cpu_us": spread([a - b for a, b in zip(on_us, off_us, strict=True)]),
        "rps_full": round(full.median.good_rps, 1),
        "rps_off": round(off.median.good_rps, 1),
        "rps_off_over_full": spread(
            [b.good_rps / a.good_rps for a, b in zip(full.runs, off.runs, strict=True)]
        ),
        "error_share_full": round(full.error_share, 6),
        "error_share_off": round(off.error_share, 6),
    }
    return with_failures(row, {"full": full, "off": off})


@dataclass(frozen=True, slots=True)
class Ablation(Scenario):
    """The routed route on the full stack against each variant of `plan`, pair by pair."""

    def measure(self, bench: Bench) -> Outcome:
        project = bench.project
        variants = plan(project.features)
        rows: list[dict[str, Any]] = []
        sides: dict[str, tuple[Side, Side]] = {}
        with tempfile.TemporaryDirectory(prefix="bulwark-ablation-") as tmp, ExitStack() as stack:
            trees: dict[str | None, Path] = {None: render(project, Path(tmp) / "full")}
            for variant in variants:
                if variant.render:
                    trees[variant.feature] = render(
                        project, Path(tmp) / f"without-{variant.feature}", variant.feature
                    )
            full_env = self._env(bench, trees[None], FULL_SETTINGS)
            full = stack.enter_context(self._serve(bench, "full", full_env))
            for variant in variants:
                if variant.bare:
                    server = self._bare(bench, full_env)
                else:
                    tree = trees[variant.feature if variant.render else None]
                    server = self._serve(
                        bench, "off", self._env(bench, tree, FULL_SETTINGS + variant.settings)
                    )
                with server as off:
                    # The full stack and the variant alternated, a discarded warm-up each first.
                    pair = self.alternate(
                        {"full": full, "off": off}, self.path, bench, label=f"-{variant.name}"
                    )
                on_side, off_side = pair["full"], pair["off"]
                sides[variant.name] = (on_side, off_side)
                rows.append(entry_for(variant, on_side, off_side))
        full_side, bare_side = sides[variants[0].name]
        return Outcome(self, bare_side, full_side, extra={"ablation": rows})

    def _env(
        self, bench: Bench, tree: Path, settings: tuple[tuple[str, str], ...]
    ) -> dict[str, str]:
        return {
            **bench.service_env(settings),
            **routed.service_env(bench.project, 0),
            "PYTHONPATH": str(tree),  # the render's package before the project's own
        }

    def _serve(
        self, bench: Bench, name: str, env: Mapping[str, str]
    ) -> AbstractContextManager[servers.RunningServer]:
        return servers.serve(
            name, routed.app_args(), project=bench.project, env={**os.environ, **env}
        )

    def _bare(
        self, bench: Bench, full_env: Mapping[str, str]
    ) -> AbstractContextManager[servers.RunningServer]:
        routes = routed.route_table(bench.project, dict(full_env))
        env = {**os.environ, "BULWARK_STACK": "bare", "BULWARK_ROUTE_TABLE": json.dumps(routes)}
        return servers.serve("off", routed.app_args(), project=bench.project, env=env)

    def failure(self, outcome: Outcome, bench: Bench) -> str | None:
        """The main pair's failure, or any variant's pair with too many unexpected answers."""
        problems = [Scenario.failure(self, outcome, bench)]  # slots: no zero-argument super()
        problems += [
            f"{row['off']} off: {row['failed']}"
            for row in outcome.extra.get("ablation", ())
            if row.get("failed")
        ]
        return "; ".join(p for p in problems if p) or None

    def verdict(self, entry: Mapping[str, Any]) -> Verdict:
        if entry.get("failed"):
            return Verdict(f"failed: {entry['failed']}", False)
        return Verdict("report only: each protection's cost", None)

    def tables(self, entry: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
        return {TABLE_TITLE: table_rows(entry.get("ablation", ()))}


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The ablation rows as text columns, cost first: how the table and the page show them; a
    row with too many unexpected answers shows no figure."""

    def shown(figure: Mapping[str, float], digits: int) -> str:
        return (
            f"{figure['median']:.{digits}f} ({figure['min']:.{digits}f}-{figure['max']:.{digits}f})"
        )

    return [
        {
            "switched off": row["off"],
            "CPU µs/req saved": "failed" if row.get("failed") else shown(row["marginal_cpu_us"], 0),
            "rps off / full": "failed" if row.get("failed") else shown(row["rps_off_over_full"], 2),
            "CPU µs/req full": f"{row['cpu_us_full']:.0f}",
            "CPU µs/req off": f"{row['cpu_us_off']:.0f}",
            "how": row["how"],
        }
        for row in rows
    ]


ABLATION = Ablation(
    "ablation",
    "the routed request on the full stack vs the same stack with each protection off",
    routed.PATH,
)
