"""Content-addressed build cache: REAPI-compatible action results over sha256 blobs."""

from __future__ import annotations

from rules.cache.gc import GcReport, collect
from rules.cache.local import (
    ENV_CACHE_DIR,
    CacheStats,
    LocalCache,
    default_cache_dir,
    resolve_cache_dir,
)
from rules.cache.records import (
    ActionResult,
    CacheCorrupt,
    CacheError,
    CacheMiss,
    FileEntry,
    InvalidEntry,
    scan_tree,
)

__all__ = [
    "ENV_CACHE_DIR",
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
    "default_cache_dir",
    "resolve_cache_dir",
    "scan_tree",
]
