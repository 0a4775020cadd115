"""File digests cached by (device, inode, size, mtime, ctime), so a no-op re-hashes nothing.

The stamp is git's and Bazel's: an edit in place that restores the size and
the mtime (cp -p, rsync -a, tar, a checkpoint sync tool) still changes the
ctime, which nobody can set back, and a replaced file has a new inode.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from rules.core.fsio import read_json, write_json
from rules.core.hashing import sha256_file

# A file modified again within the filesystem's timestamp granularity after we
# hashed it would keep the same (size, mtime) and fool the cache. Like git's
# "racy clean" rule, entries for files this young are not remembered.
RACY_SECONDS = 2.0
_STAMP = 5  # device, inode, size, mtime_ns, ctime_ns


def file_stamp(st: os.stat_result) -> list[int | str]:
    """What identifies a file's content without reading it (git's and Bazel's stamp)."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def settled(st: os.stat_result) -> bool:
    """Old enough that its stamp can be trusted to change on the next edit (not racy)."""
    return time.time() - st.st_mtime_ns / 1e9 > RACY_SECONDS


class DigestCache:
    """sha256 of workspace files, persisted in the state folder between runs.

    Thread-safe: doit -n N checks targets from several threads. The file is a
    cache only; losing it (or losing a race with another process writing it)
    costs a re-hash, never a wrong answer.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        raw = read_json(path)
        self._entries: dict[str, list[int | str]] = {
            key: entry
            for key, entry in (raw.items() if isinstance(raw, dict) else ())
            if isinstance(entry, list)
            and len(entry) == _STAMP + 1
            and all(isinstance(v, int) for v in entry[:_STAMP])
            and isinstance(entry[_STAMP], str)
        }
        self._dirty = False
        self._lock = threading.Lock()

    def digest(self, path: Path, st: os.stat_result | None = None) -> str:
        """sha256 of `path`; raises FileNotFoundError when it is missing.

        `st` is the file's stat when the caller has just taken it (a folder
        walk has): a no-op then costs one stat per file, not two.
        """
        if st is None:
            st = os.stat(path)
        key = str(path)
        stamp = file_stamp(st)
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[:_STAMP] == stamp:
            return str(entry[_STAMP])
        value = sha256_file(path)
        if settled(st):
            self._store(key, stamp, value)
        return value

    def record(self, path: Path, sha256: str) -> None:
        """Remember the digest of a file this build just wrote and verified (a published
        artifact), so the next no-op does not read it again.

        The racy-clean rule is waived: the bytes were hashed as they were
        written, the file was renamed into place under the output lock, and
        any later edit changes its ctime.
        """
        try:
            st = os.stat(path)
        except OSError:
            return
        self._store(str(path), file_stamp(st), sha256)

    def _store(self, key: str, stamp: list[int | str], value: str) -> None:
        with self._lock:
            self._entries[key] = [*stamp, value]
            self._dirty = True

    def save(self) -> None:
        """Persist new entries; skipped when nothing changed."""
        with self._lock:
            if not self._dirty:
                return
            entries = dict(self._entries)
            self._dirty = False
        try:
            write_json(self._path, entries, durable=False)
        except OSError:
            pass  # a cache that cannot be written only costs re-hashing next time
