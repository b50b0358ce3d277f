"""Several uvicorn workers, one exposition: each worker mirrors its numbers into files.

With several workers each process counts alone; prometheus_client's multiprocess mode sums the
per-process files it finds in PROMETHEUS_MULTIPROC_DIR, so each worker writes its numbers there
(the export flushes once a second and right before it answers a scrape).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import values
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    """The multiprocess directory when several workers share the metrics, else None."""
    directory = os.environ.get(MULTIPROC_ENV)
    return Path(directory) if directory else None


def prepare_multiprocess(workers: int, directory: Path) -> None:
    """Before uvicorn starts several workers: an empty directory for their metric files.

    Wiped at every start, so counters from processes of an earlier run (and their pids) are not
    summed into this one's. One worker needs no files and keeps the fast in-memory path.
    """
    if workers <= 1:
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)


def _gauge_mode(name: str) -> str:
    """How multiprocess mode combines a gauge across workers."""
    if name.startswith("process_"):
        return "liveall"  # per worker: one RSS per pid
    if name.endswith(("_info", "_threshold_seconds")):
        return "livemax"  # the same in every worker, or the worst of them
    return "livesum"  # in-flight requests, queue depths: the service's total


class Mirror:
    """Writes this worker's numbers into its prometheus_client multiprocess files.

    Files hold absolute per-process values; MultiProcessCollector sums them across pids. Only
    changed values are written, so an idle worker's flush costs a collect and a comparison.
    """

    def __init__(self, collectors: Sequence[Collector]) -> None:
        if not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(
                f"{MULTIPROC_ENV} must be set before prometheus_client is first imported"
            )
        self._collectors = tuple(collectors)
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[object, float]] = {}

    def flush(self) -> None:
        for collector in self._collectors:
            for metric in collector.collect():
                self._write_metric(metric)

    def _write_metric(self, metric: Metric) -> None:
        below: dict[tuple[tuple[str, str], ...], float] = {}
        for sample in metric.samples:
            name, value = sample.name, sample.value
            if name.endswith(("_created", "_gcount", "_gsum")) or (
                metric.type == "histogram" and name.endswith("_count")
            ):
                continue  # derived by MultiProcessCollector, or not summable
            labels = tuple(sample.labels.items())
            if name.endswith("_bucket"):
                # Files hold per-bucket counts; the collector makes them cumulative again.
                series = tuple(item for item in labels if item[0] != "le")
                value, below[series] = value - below.get(series, 0.0), value
            self._write(metric, name, labels, value)

    def _write(
        self, metric: Metric, name: str, labels: tuple[tuple[str, str], ...], value: float
    ) -> None:
        key = (name, labels)
        known = self._values.get(key)
        if known is not None and known[1] == value:
            return
        holder = known[0] if known is not None else None
        if holder is None:
            holder = values.ValueClass(
                metric.type,
                metric.name,
                name,
                [k for k, _ in labels],
                [v for _, v in labels],
                metric.documentation,
                multiprocess_mode=_gauge_mode(metric.name),
            )
        holder.set(value)  # type: ignore[attr-defined]
        self._values[key] = (holder, value)
