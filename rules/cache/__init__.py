"""Content-addressed build cache: REAPI-compatible action results over sha256 blobs."""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Where each public name lives. They load on first use: a no-op build imports
# rules.cache.remote_config (through the settings) and nothing else of here.
_EXPORTS = {
    "ActionResult": "rules.cache.records",
    "CacheCorrupt": "rules.cache.records",
    "CacheMiss": "rules.cache.records",
    "CacheError": "rules.core.errors",
    "CacheStats": "rules.cache.local",
    "LocalCache": "rules.cache.local",
    "FileEntry": "rules.core.files",
    "InvalidEntry": "rules.core.files",
    "scan_tree": "rules.core.files",
    "GcReport": "rules.cache.gc",
    "collect": "rules.cache.gc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rules.cache' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
