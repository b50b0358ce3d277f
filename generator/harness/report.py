"""`bulwark loadtest --report DIR`: the JSON result as report.json, a plot and one HTML page.

Everything here reads the JSON document alone (never the live run), so a report can be redrawn
from any saved result, and the tests draw one from a fixture.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
REPORT_HTML = "index.html"

_BASELINE_COLOUR = "#9e9e9e"
_SERVICE_COLOUR = "#1565c0"
_SHED_COLOUR = "#e65100"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A scenario's target in words, and whether this run met it (None: report only)."""

    target: str
    met: bool | None


def _ratio_at_least(floor: float, wording: str) -> Callable[[Mapping[str, Any]], Verdict]:
    def judge(entry: Mapping[str, Any]) -> Verdict:
        return Verdict(f"{wording} ≥ {floor:g}", entry["ratio"] >= floor)

    return judge


def _overload(entry: Mapping[str, Any]) -> Verdict:
    shed, admitted = entry.get("shed_p99_ms"), entry.get("admitted_p99_ms")
    unloaded, errors = entry.get("unloaded_p99_ms"), entry.get("non_503_errors")
    if shed is None or admitted is None or unloaded is None:
        return Verdict("shed p99 < 2 ms, admitted p99 ≤ 2 x unloaded p99", None)
    # The Lua script reports -1 for a class with no answer: no shed answer is no evidence.
    met = 0 <= shed < 2.0 and 0 <= admitted <= 2 * unloaded and not errors
    return Verdict(
        f"shed p99 < 2 ms, admitted p99 ≤ 2 x unloaded p99 ({2 * unloaded:.1f} ms), "
        "no non-503 errors",
        met,
    )


def _loop_monitor(entry: Mapping[str, Any]) -> Verdict:
    # Judged on both sides loaded at once when measured: alternated runs drift far more than
    # the 2 % at stake (harness/loop_monitor.py).
    ratio = entry.get("concurrent_ratio_median", entry["ratio"])
    idle = entry.get("idle_cpu_monitor_pct", 0.0)
    return Verdict(
        "rps ≥ 0.98 x the same service with the monitor off (loaded at once), "
        "monitor's idle CPU ≤ 0.25 %",
        ratio >= 0.98 and idle <= 0.25,
    )


# Issues 3-5: health and db-read against their bare baselines; cached-read against the bare
# FastAPI + asyncpg read, which is db-read's baseline too; direct and nginx show nginx's cost.
_TARGETS: dict[str, Callable[[Mapping[str, Any]], Verdict]] = {
    "health": _ratio_at_least(0.90, "rps ratio"),
    "db-read": _ratio_at_least(0.85, "rps ratio"),
    "cached-read": _ratio_at_least(1.5, "rps / bare db-read rps"),
    "overload": _overload,
    "loop-monitor": _loop_monitor,
}


def verdict(entry: Mapping[str, Any]) -> Verdict:
    """The target of one scenario entry of the JSON document, judged on its figures."""
    judge = _TARGETS.get(entry["name"])
    return judge(entry) if judge else Verdict("report only", None)


def write_report(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write report.json, report.png and index.html into out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path, html_path = (
        out_dir / REPORT_JSON,
        out_dir / REPORT_PNG,
        out_dir / REPORT_HTML,
    )
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    png = plot(report)
    png_path.write_bytes(png)
    html_path.write_text(page(report, png), encoding="utf-8")
    return [json_path, png_path, html_path]


# --- the plot --------------------------------------------------------------------------------


def plot(report: Mapping[str, Any]) -> bytes:
    """The PNG: rps and p50/p99 per scenario, latency over time under overload."""
    # Figure without pyplot: no backend selection, no display, no global state.
    figure = Figure(figsize=(12, 9), dpi=90, layout="constrained")
    top, bottom = figure.subfigures(2, 1)
    rps_axes, latency_axes = top.subplots(1, 2)
    over_time = bottom.subplots()
    scenarios = report["scenarios"]
    _rps_bars(rps_axes, scenarios)
    _latency_bars(latency_axes, scenarios)
    overload = next((entry for entry in scenarios if entry["name"] == "overload"), None)
    if overload is not None and overload.get("series"):
        _over_time(over_time, overload)
    else:
        reason = next(
            (s["reason"] for s in report.get("skipped", ()) if s["name"] == "overload"),
            "the overload scenario was not run",
        )
        over_time.set_axis_off()
        over_time.text(0.5, 0.5, f"No latency over time: {reason}", ha="center", wrap=True)
    machine = report.get("machine", {})
    figure.suptitle(
        f"bulwark loadtest · {machine.get('cpu_model', '?')} · {machine.get('date', '')}",
        fontsize=10,
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _grouped(
    axes: Axes, names: Sequence[str], series: Mapping[str, tuple[list[float], str]]
) -> list[BarContainer]:
    """Bars of each series side by side per scenario; returns the bar containers in order."""
    width = 0.8 / len(series)
    containers = []
    for index, (label, (values, colour)) in enumerate(series.items()):
        offsets = [i + (index - (len(series) - 1) / 2) * width for i in range(len(names))]
        containers.append(axes.bar(offsets, values, width, label=label, color=colour))
    axes.set_xticks(range(len(names)), names, rotation=20)
    axes.legend(fontsize=8)
    return containers


def _rps_bars(axes: Axes, scenarios: Sequence[Mapping[str, Any]]) -> None:
    # A scenario whose grey bar is not bare FastAPI says what it is (loop-monitor's `baseline`).
    names = [
        e["name"] + (f"\n(grey: {e['baseline']})" if "baseline" in e else "") for e in scenarios
    ]
    _, service = _grouped(
        axes,
        names,
        {
            "bare FastAPI": ([e["baseline_rps"] for e in scenarios], _BASELINE_COLOUR),
            "generated": ([e["rps"] for e in scenarios], _SERVICE_COLOUR),
        },
    )
    axes.bar_label(service, [f"{e['ratio']:.2f}x" for e in scenarios], fontsize=8)
    axes.set_title("requests per second (label: generated / bare)", fontsize=10)
    axes.set_ylabel("rps (median run)")


def _latency_bars(axes: Axes, scenarios: Sequence[Mapping[str, Any]]) -> None:
    names = [entry["name"] for entry in scenarios]
    _grouped(
        axes,
        names,
        {
            "bare p50": ([e["baseline_p50_ms"] for e in scenarios], "#cfcfcf"),
            "bare p99": ([e["baseline_p99_ms"] for e in scenarios], _BASELINE_COLOUR),
            "generated p50": ([e["p50_ms"] for e in scenarios], "#90caf9"),
            "generated p99": ([e["p99_ms"] for e in scenarios], _SERVICE_COLOUR),
        },
    )
    axes.set_yscale("log")
    axes.set_title("latency per scenario (wrk, all answers)", fontsize=10)
    axes.set_ylabel("ms (log)")


def _over_time(axes: Axes, entry: Mapping[str, Any]) -> None:
    def line(
        series: Sequence[Mapping[str, Any]], key: str, label: str, colour: str, style: str
    ) -> None:
        points = [(b["t_s"], b[key]) for b in series if b[key] is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, style, label=label, color=colour, marker=".")

    service, baseline = entry["series"], entry.get("baseline_series", [])
    line(baseline, "admitted_p99_ms", "bare FastAPI p99 (no shedding)", _BASELINE_COLOUR, "-")
    line(baseline, "admitted_p50_ms", "bare FastAPI p50", _BASELINE_COLOUR, "--")
    line(service, "admitted_p99_ms", "generated admitted p99", _SERVICE_COLOUR, "-")
    line(service, "admitted_p50_ms", "generated admitted p50", _SERVICE_COLOUR, "--")
    line(service, "shed_p99_ms", "generated shed (503) p99", _SHED_COLOUR, "-")
    if unloaded := entry.get("unloaded_p99_ms"):
        axes.axhline(2 * unloaded, color=_SERVICE_COLOUR, linewidth=0.8, linestyle=":")
        axes.annotate("admitted target", (0, 2 * unloaded), fontsize=8, color=_SERVICE_COLOUR)
    axes.axhline(2.0, color=_SHED_COLOUR, linewidth=0.8, linestyle=":")
    axes.annotate("shed target 2 ms", (0, 2.0), fontsize=8, color=_SHED_COLOUR)
    axes.set_yscale("log")
    axes.set_xlabel(f"seconds into the median run (buckets of {entry.get('interval_s', 1)} s)")
    axes.set_ylabel("ms (log)")
    offered = entry.get("offered_over_capacity")
    axes.set_title(
        "latency over time under overload"
        + (f" (offered ≈ {offered}x capacity)" if offered is not None else ""),
        fontsize=10,
    )
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)


# --- the page --------------------------------------------------------------------------------


def page(report: Mapping[str, Any], png: bytes) -> str:
    """One self-contained HTML page: the table, the parameters, the command, the plot inline."""
    esc = html.escape
    rows = []
    for entry in report["scenarios"]:
        judged = verdict(entry)
        met, css = {True: ("met", "met"), False: ("missed", "missed"), None: ("-", "none")}[
            judged.met
        ]
        rows.append(
            "<tr>"
            f"<td>{esc(entry['name'])}</td>"
            f"<td>{entry['rps']:,.0f}</td><td>{entry['baseline_rps']:,.0f}</td>"
            f"<td>{entry['ratio']:.2f}</td>"
            f"<td>{entry['p50_ms']:.2f}</td><td>{entry['baseline_p50_ms']:.2f}</td>"
            f"<td>{entry['p99_ms']:.2f}</td><td>{entry['baseline_p99_ms']:.2f}</td>"
            f"<td>{entry['errors']}</td>"
            f"<td>{esc(judged.target)}</td><td class='{css}'>{met}</td>"
            "</tr>"
        )
    skipped = "".join(
        f"<li><b>{esc(s['name'])}</b>: {esc(s['reason'])}</li>" for s in report.get("skipped", ())
    )
    extra_figures = "".join(
        f"<h2>{html.escape(entry['name'])} figures</h2>"
        + _definitions({k: v for k, v in entry.items() if k not in _TABLE_KEYS and _scalar(v)})
        for entry in report["scenarios"]
        if any(k not in _TABLE_KEYS for k in entry)
    )
    image = base64.b64encode(png).decode("ascii")
    command = report.get("command", "")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Bulwark load-test report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:first-child, td:nth-last-child(2) {{ text-align: left; }}
.met {{ color: #2e7d32; }} .missed {{ color: #c62828; font-weight: bold; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; }}
dt {{ font-weight: bold; }} dd {{ margin: 0; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
<h1>Bulwark load-test report</h1>
<p>Generated service against bare FastAPI, same machine, same run. rps and latency are
wrk's, from the median run by rps; ratio = generated rps / bare rps.</p>
<table>
<thead><tr><th>scenario</th><th>rps</th><th>bare rps</th><th>ratio</th>
<th>p50 ms</th><th>bare p50 ms</th><th>p99 ms</th><th>bare p99 ms</th><th>errors</th>
<th>target</th><th>result</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
{f"<h2>skipped</h2><ul>{skipped}</ul>" if skipped else ""}
{extra_figures}
<h2>plot</h2>
<img alt="rps and latency per scenario; latency over time under overload"
 src="data:image/png;base64,{image}">
<h2>command</h2>
<pre>{esc(command) if command else "(not recorded)"}</pre>
<h2>run parameters</h2>
{_definitions(report.get("protocol", {}))}
<h2>machine</h2>
{_definitions(report.get("machine", {}))}
</body>
</html>
"""


# Every scenario's fields in the table or beside it; what else an entry has is its own figures.
_TABLE_KEYS = frozenset(
    {
        "name",
        "rps",
        "p50_ms",
        "p99_ms",
        "errors",
        "baseline_rps",
        "baseline_p50_ms",
        "baseline_p99_ms",
        "baseline_errors",
        "ratio",
        "method",
        "path",
        "workers",
        "via_nginx",
        "runs",
    }
)


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float) or value is None


def _definitions(values: Mapping[str, Any]) -> str:
    items = "".join(
        f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(_text(value))}</dd>"
        for key, value in values.items()
    )
    return f"<dl>{items}</dl>"


def _text(value: object) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(item) for item in value)
    return str(value)
