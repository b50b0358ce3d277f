"""Two-level cache: in-process L1 (TTL + LRU), Redis L2 (JSON), single-flight loads.

See docs/cache.md for settings, consistency and failure behaviour.
"""

from .cached import Cache, CacheStats

__all__ = ["Cache", "CacheStats"]
