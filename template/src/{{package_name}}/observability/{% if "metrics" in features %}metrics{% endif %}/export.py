"""The scrape-time half of the metrics: plain-number sources turned into Prometheus families.

Nothing here runs per request: `/metrics` asks every source for its families when it is read,
and in multiprocess mode the worker's mirror is flushed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
from collections.abc import Iterator, Sequence
from dataclasses import replace

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ... import __version__
from ..stats import Family, Histogram, StatsSource
from .multiprocess import Mirror, multiprocess_dir

CONTENT_TYPE = CONTENT_TYPE_LATEST  # what `/metrics` answers with


class BuildInfo:
    """The constant `service_build_info` series: which code and runtime answer."""

    def __init__(self, service: str) -> None:
        self._labels = (service, __version__, platform.python_version())

    def families(self) -> Iterator[Family]:
        yield Family(
            "gauge",
            "service_build_info",
            "Service name, version and Python version; always 1.",
            ("service", "version", "python"),
            [(self._labels, 1)],
        )


class StatsCollector(Collector):
    """prometheus_client Collector turning plain-number sources into families at scrape time.

    Several sources may export one family (every circuit breaker its own state series): their
    values are merged, since an exposition may name each family only once.
    """

    def __init__(self, sources: Sequence[StatsSource]) -> None:
        self._sources = tuple(sources)

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Family] = {}
        for source in self._sources:
            for family in source.families():
                known = merged.get(family.name)
                if known is None:
                    merged[family.name] = family
                elif (known.kind, known.labels) != (family.kind, family.labels):
                    raise ValueError(f"family {family.name!r} exported with two shapes")
                else:
                    values = [*known.values, *family.values]
                    merged[family.name] = replace(known, values=values)
        for family in merged.values():
            yield _to_prometheus(family)


def _to_prometheus(family: Family) -> Metric:
    labels = list(family.labels)
    if family.kind == "histogram":
        histograms = HistogramMetricFamily(family.name, family.help, labels=labels)
        for label_values, histogram in family.values:
            assert isinstance(histogram, Histogram)  # noqa: S101 - a Family invariant
            buckets = [(_le(bound), float(c)) for bound, c in histogram.cumulative()]
            histograms.add_metric(list(label_values), buckets, histogram.total)
        return histograms
    metric: CounterMetricFamily | GaugeMetricFamily
    if family.kind == "counter":
        metric = CounterMetricFamily(family.name, family.help, labels=labels)
    else:
        metric = GaugeMetricFamily(family.name, family.help, labels=labels)
    for label_values, value in family.values:
        assert not isinstance(value, Histogram)  # noqa: S101 - a Family invariant
        metric.add_metric(list(label_values), value)
    return metric


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (`0.25`, `1.0`, `+Inf`)."""
    return "+Inf" if bound == float("inf") else repr(bound)


class MetricsExport:
    """Lifespan resource owning the registry `/metrics` renders, and the multiprocess mirror."""

    name = "metrics"
    FLUSH_INTERVAL_S = 1.0

    def __init__(self, sources: Sequence[StatsSource]) -> None:
        stats = StatsCollector(sources)
        self._directory = multiprocess_dir()
        self._flusher: asyncio.Task[None] | None = None
        self._mirror: Mirror | None = None
        self.registry = CollectorRegistry()
        if self._directory is None:
            self.registry.register(stats)
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        else:
            # prometheus_client's multiprocess module ships without annotations.
            multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
                self.registry, path=str(self._directory)
            )
            self._mirror = Mirror([stats, ProcessCollector(registry=None)])

    async def start(self) -> None:
        if self._mirror is not None:
            self._mirror.flush()
            self._flusher = asyncio.create_task(self._flush_periodically(), name="metrics-flush")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self._mirror is not None and self._directory is not None:
            self._mirror.flush()
            # Drops this pid's live gauges (in-flight): a stopped worker serves nothing.
            multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                os.getpid(), str(self._directory)
            )

    async def check(self) -> bool:
        return True

    def details(self) -> dict[str, object]:
        return {"multiprocess": self._directory is not None}

    async def render(self) -> bytes:
        """The exposition text; in multiprocess mode the files are read in a thread."""
        if self._mirror is None:
            return generate_latest(self.registry)
        self._mirror.flush()
        return await asyncio.to_thread(generate_latest, self.registry)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_INTERVAL_S)
            assert self._mirror is not None  # noqa: S101 - set whenever this task runs
            self._mirror.flush()
