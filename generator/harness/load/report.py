"""`bulwark loadtest --report DIR`: the JSON result as report.json, a plot and one HTML page.

Everything here reads the JSON document alone (never the live run), so a report can be redrawn
from any saved result, and the tests draw one from a fixture.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from generator.harness.load.scenario import BASELINE_COLOUR, SERVICE_COLOUR, Scenario, Verdict
from generator.harness.load.scenarios import SCENARIOS

REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
REPORT_HTML = "index.html"


def verdict(entry: Mapping[str, Any]) -> Verdict:
    """The target of one scenario entry of the JSON document, judged by its scenario."""
    scenario = SCENARIOS.get(entry["name"])
    return scenario.verdict(entry) if scenario else Verdict("report only", None)


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
    drawn = next((e for e in scenarios if _draws(e) and e.get("series")), None)
    if drawn is not None:
        SCENARIOS[drawn["name"]].draw_over_time(over_time, drawn)
    else:
        reason = next(
            (s["reason"] for s in report.get("skipped", ()) if _draws(s)),
            "no scenario with a latency series was run",
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


def _draws(entry: Mapping[str, Any]) -> bool:
    scenario: Scenario | None = SCENARIOS.get(entry["name"])
    return scenario is not None and scenario.over_time


def _ratio(entry: Mapping[str, Any]) -> str:
    return "failed" if entry.get("ratio") is None else f"{entry['ratio']:.2f}"


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
            "bare FastAPI": ([e["baseline_rps"] for e in scenarios], BASELINE_COLOUR),
            "generated": ([e["rps"] for e in scenarios], SERVICE_COLOUR),
        },
    )
    labels = [_ratio(e) + ("" if e.get("ratio") is None else "x") for e in scenarios]
    axes.bar_label(service, labels, fontsize=8)
    axes.set_title("requests per second (label: generated / bare)", fontsize=10)
    axes.set_ylabel("rps (median run)")


def _latency_bars(axes: Axes, scenarios: Sequence[Mapping[str, Any]]) -> None:
    names = [entry["name"] for entry in scenarios]
    _grouped(
        axes,
        names,
        {
            "bare p50": ([e["baseline_p50_ms"] for e in scenarios], "#cfcfcf"),
            "bare p99": ([e["baseline_p99_ms"] for e in scenarios], BASELINE_COLOUR),
            "generated p50": ([e["p50_ms"] for e in scenarios], "#90caf9"),
            "generated p99": ([e["p99_ms"] for e in scenarios], SERVICE_COLOUR),
        },
    )
    axes.set_yscale("log")
    axes.set_title("latency per scenario (wrk, expected answers)", fontsize=10)
    axes.set_ylabel("ms (log)")


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
            f"<td>{esc(entry['name'])}"
            + (f"<br><small>vs {esc(entry['baseline'])}</small>" if "baseline" in entry else "")
            + "</td>"
            f"<td>{entry['rps']:,.0f}</td><td>{entry['baseline_rps']:,.0f}</td>"
            f"<td>{_ratio(entry)}</td>"
            f"<td>{entry['p50_ms']:.2f}</td><td>{entry['baseline_p50_ms']:.2f}</td>"
            f"<td>{entry['p99_ms']:.2f}</td><td>{entry['baseline_p99_ms']:.2f}</td>"
            f"<td>{_cpu(entry.get('cpu_us_per_request'))}</td>"
            f"<td>{_cpu(entry.get('baseline_cpu_us_per_request'))}</td>"
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
    own_tables = "".join(
        _html_table(f"{entry['name']}: {title}", rows)
        for entry in report["scenarios"]
        if entry["name"] in SCENARIOS
        for title, rows in SCENARIOS[entry["name"]].tables(entry).items()
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
<p>Generated service against bare FastAPI (or the stack named under a scenario), same
machine, same run. rps and latency are wrk's over the expected answers only, from the median
run by rps; ratio = generated rps / bare rps; CPU µs/req is the server's CPU time per expected
answer, median over the runs. A scenario with more than 0.1 % unexpected answers on either
side has failed and shows no ratio.</p>
<table>
<thead><tr><th>scenario</th><th>rps</th><th>bare rps</th><th>ratio</th>
<th>p50 ms</th><th>bare p50 ms</th><th>p99 ms</th><th>bare p99 ms</th>
<th>CPU µs/req</th><th>bare CPU µs/req</th><th>errors</th>
<th>target</th><th>result</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
{f"<h2>skipped</h2><ul>{skipped}</ul>" if skipped else ""}
{own_tables}
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
        "expected_statuses",
        "failed",
        "cpu_us_per_request",
        "baseline_cpu_us_per_request",
    }
)


def _html_table(title: str, rows: Sequence[Mapping[str, str]]) -> str:
    """A scenario's own table (Scenario.tables) under its title."""
    esc = html.escape
    columns = list(rows[0]) if rows else []
    head = "".join(f"<th>{esc(column)}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(row[column])}</td>" for column in columns) + "</tr>"
        for row in rows
    )
    return (
        f"<h2>{esc(title)}</h2>\n<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


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
