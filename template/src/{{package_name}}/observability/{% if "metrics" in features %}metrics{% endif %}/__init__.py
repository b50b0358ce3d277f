"""Prometheus metrics: counted in plain numbers per request, turned into families when scraped.

`requests.py` is the gate's observer (the hot path), `export.py` what `/metrics` renders, and
`multiprocess.py` how several workers share one exposition.
"""

from .export import CONTENT_TYPE, MetricsExport
from .multiprocess import prepare_multiprocess
from .requests import RequestMetrics

__all__ = ["CONTENT_TYPE", "MetricsExport", "RequestMetrics", "prepare_multiprocess"]
