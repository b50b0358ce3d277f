"""Two-level cache: in-process L1 (TTL + LRU), Redis L2 (JSON), single-flight loads.

Settings, consistency and failure behaviour are in `cached.py`'s contract.
"""

from .cached import Cache, CacheStats

__all__ = ["Cache", "CacheStats"]
