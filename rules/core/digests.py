"""File digests cached by (inode, size, mtime_ns), so a no-op build re-hashes nothing."""

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
            and len(entry) == 4
            and all(isinstance(v, int) for v in entry[:3])
            and isinstance(entry[3], str)
        }
        self._dirty = False
        self._lock = threading.Lock()

    def digest(self, path: Path) -> str:
        """sha256 of `path`; raises FileNotFoundError when it is missing."""
        st = os.stat(path)
        key = str(path)
        stamp: list[int | str] = [st.st_ino, st.st_size, st.st_mtime_ns]
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[:3] == stamp:
            return str(entry[3])
        value = sha256_file(path)
        if time.time() - st.st_mtime_ns / 1e9 > RACY_SECONDS:
            with self._lock:
                self._entries[key] = [*stamp, value]
                self._dirty = True
        return value

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
