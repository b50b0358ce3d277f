"""The metrics feature, wired last: it exports what every part wired before it counts."""

from __future__ import annotations

from ...api import metrics
from ...settings import Settings
from ...wiring import Parts
from .export import BuildInfo, MetricsExport
from .requests import RequestMetrics


def wire(settings: Settings, parts: Parts) -> None:
    request_metrics = RequestMetrics()
    parts.observers.append(request_metrics)
    parts.header_sources.append(request_metrics)
    parts.stats[:0] = [request_metrics, BuildInfo(settings.service_name)]
    export = MetricsExport(parts.counting())
    parts.internals.append(export)
    parts.state["metrics"] = export
    parts.routers.append(metrics.router)
