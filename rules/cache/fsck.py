"""`doit cache_check`: verify every entry and blob of a local cache, and evict the bad ones.

Safe while builds run, as gc is: entries only appear by rename, a file is
removed only if it is still the one that was read (evict_file compares the
inode), and a blob or entry that vanishes mid-check was taken by gc, which
is not a fault. A build that raced a removal sees a miss and rebuilds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rules.cache.local import LocalCache, evict_file, read_entry, walk_cache
from rules.cache.records import ActionResult
from rules.core.errors import CacheError
from rules.core.files import InvalidEntry
from rules.core.fsio import DigestMismatch, read_chunks, verified


@dataclass(frozen=True)
class Finding:
    """One bad file of the cache, what was wrong with it, and that it was removed."""

    path: str
    problem: str

    def line(self) -> str:
        return f"{self.path}: {self.problem}; removed"


@dataclass(frozen=True)
class CheckReport:
    """What `check` looked at and what it removed."""

    entries: int
    blobs: int
    bad: tuple[Finding, ...]


def check(root: Path, on_finding: Callable[[Finding], None] = lambda f: None) -> CheckReport:
    """Re-hash every blob, decode every AC entry and check the blobs it names; evict what is bad.

    `on_finding` is called as each bad file is found (and removed), so a long
    check reports as it goes.
    """
    cache = LocalCache(root)
    bad: list[Finding] = []

    def found(path: str, problem: str) -> None:
        finding = Finding(path, problem)
        bad.append(finding)
        on_finding(finding)

    good: dict[str, int] = {}
    corrupt: set[str] = set()
    blobs = entries = 0
    try:
        for item in [i for i in walk_cache(root) if i.area == "cas" and not i.is_tmp]:
            blobs += 1
            problem = _blob_problem(Path(item.path), item.name, item.size)
            if problem is None:
                good[item.name] = item.size
            elif problem != "gone":
                corrupt.add(item.name)
                found(item.path, problem)
        for item in [i for i in walk_cache(root) if i.area == "ac" and not i.is_tmp]:
            entries += 1
            problem = _entry_problem(cache, Path(item.path), item.name, good, corrupt)
            if problem is not None:
                found(item.path, problem)
    except OSError as err:
        raise CacheError(f"cannot check cache {root}: {err}") from err
    return CheckReport(entries, blobs, tuple(bad))


def _blob_problem(path: Path, sha256: str, size: int) -> str | None:
    """None for a good blob, "gone" if it vanished (gc), else the problem; a bad one is
    evicted."""
    try:
        with open(path, "rb") as handle:
            seen = os.fstat(handle.fileno())
            for _ in verified(read_chunks(handle), sha256, seen.st_size, str(path)):
                pass
    except FileNotFoundError:
        return "gone"
    except DigestMismatch as err:
        evict_file(path, seen)
        return f"blob is corrupt ({err})"
    return None


def _entry_problem(cache: LocalCache, path: Path, key: str, good: dict[str, int],
                   corrupt: set[str]) -> str | None:
    read = read_entry(path)
    if read is None:
        return None
    seen, data = read
    problem = None
    try:
        entry = ActionResult.from_reapi(data)
        if entry.key != key:
            problem = f"entry names action {entry.key[:12] or '(none)'}, not its own key"
    except InvalidEntry as err:
        problem = f"entry is corrupt ({err})"
    else:
        for file in entry.files if problem is None else ():
            if file.sha256 in corrupt:
                problem = f"entry's blob {file.sha256[:12]} ({file.path}) was corrupt"
            elif file.sha256 not in good:
                problem = _late_blob(cache, file.sha256, file.size, file.path)
            elif good[file.sha256] != file.size:
                problem = f"entry says {file.path} has {file.size} bytes, its blob has " \
                          f"{good[file.sha256]}"
            if problem is not None:
                break
    if problem is None:
        return None
    if not os.path.lexists(path):
        return None  # a concurrent gc took the entry, then its blobs: not a fault
    evict_file(path, seen)
    return problem


def _late_blob(cache: LocalCache, sha256: str, size: int, name: str) -> str | None:
    """A blob not seen by the first walk: written since (a running build), or missing."""
    blob = cache.cas_path(sha256)
    try:
        actual = blob.stat().st_size
    except FileNotFoundError:
        return f"entry's blob {sha256[:12]} ({name}) is missing"
    if actual != size:
        return f"entry says {name} has {size} bytes, its blob has {actual}"
    return None
