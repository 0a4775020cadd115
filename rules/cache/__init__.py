"""Content-addressed build cache: REAPI-compatible action results over sha256 blobs."""

from __future__ import annotations

from rules.cache.gc import GcReport, collect
from rules.cache.local import (
    CacheStats,
    LocalCache,
)
from rules.cache.records import ActionResult, CacheCorrupt, CacheMiss
from rules.core.errors import CacheError
from rules.core.files import FileEntry, InvalidEntry, scan_tree

__all__ = [
    "ActionResult",
    "CacheCorrupt",
    "CacheError",
    "CacheMiss",
    "CacheStats",
    "FileEntry",
    "GcReport",
    "InvalidEntry",
    "LocalCache",
    "collect",
    "scan_tree",
]
