"""Least-recently-used garbage collection of a cache root, safe while builds run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from rules.cache.local import walk_cache
from rules.core.errors import CacheError

# A tmp file this old belongs to a writer that died: nothing takes an hour to
# write one blob. Younger ones may be mid-write by a running build.
TMP_MAX_AGE_S = 3600.0


@dataclass(frozen=True)
class GcReport:
    """What one `collect` run removed and what is left."""

    removed_ac: int
    removed_cas: int
    removed_tmp: int
    freed_bytes: int
    remaining_bytes: int  # AC entries plus CAS blobs still present after the run


def collect(
    cache_root: Path,
    max_bytes: int,
    *,
    tmp_max_age: float = TMP_MAX_AGE_S,
    now: float | None = None,
) -> GcReport:
    """Delete least-recently-used entries of `cache_root` until it holds at most `max_bytes`.

    Order is by mtime (lookups and restores touch what they use), AC entries
    before CAS blobs of the same age so an entry never outlives its blobs by
    gc's hand. A concurrent reader that loses a blob sees a miss, never an
    error: lookup checks blob presence and materialize raises CacheMiss.
    Shard directories are kept even when empty, since a concurrent store may
    be about to write into one.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0. Received: max_bytes={max_bytes}")
    clock = time.time() if now is None else now
    removed = {"ac": 0, "cas": 0}
    removed_tmp = freed = total = 0
    try:
        candidates = []
        for item in walk_cache(cache_root):
            if item.is_tmp:
                if clock - item.mtime_ns / 1e9 > tmp_max_age and _unlink_unchanged(
                    item.path, item.mtime_ns
                ):
                    removed_tmp += 1
                    freed += item.size
                continue
            candidates.append(item)
            total += item.size
        candidates.sort(key=lambda i: (i.mtime_ns, 0 if i.area == "ac" else 1, i.name))
        for item in candidates:
            if total <= max_bytes:
                break
            if _unlink_unchanged(item.path, item.mtime_ns):
                removed[item.area] += 1
                freed += item.size
                total -= item.size
            elif not os.path.exists(item.path):
                # Someone else (another gc, an eviction) removed it first.
                total -= item.size
    except OSError as error:
        raise CacheError(f"gc of cache {cache_root} failed: {error}") from error
    return GcReport(removed["ac"], removed["cas"], removed_tmp, freed, total)


def _unlink_unchanged(path: str, mtime_ns: int) -> bool:
    """Unlink `path` unless it was touched since the scan (then a build just used it)."""
    try:
        if os.stat(path).st_mtime_ns != mtime_ns:
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
