"""Prometheus metrics: counted in plain numbers per request, turned into families when scraped.

`requests.py` is the gate's observer (the hot path), `export.py` what `/metrics` renders, and
`multiprocess.py` how several workers share one exposition.
"""

from .export import CONTENT_TYPE, BuildInfo, MetricsExport, StatsCollector
from .multiprocess import MULTIPROC_ENV, multiprocess_dir, prepare_multiprocess
from .requests import DURATION_BUCKETS, RequestMetrics

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "MULTIPROC_ENV",
    "BuildInfo",
    "MetricsExport",
    "RequestMetrics",
    "StatsCollector",
    "multiprocess_dir",
    "prepare_multiprocess",
]
