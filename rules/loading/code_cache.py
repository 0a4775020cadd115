"""Compiled BUILD.py code kept between runs, keyed on each file's stat, as .pyc files are.

A 1,000-package no-op spent about 0.1 s compiling BUILD.py files that had not
changed. The stamp is the digest cache's (device, inode, size, mtime_ns,
ctime_ns): an edit in place that restores the mtime still changes the ctime.
"""

from __future__ import annotations

import importlib.util
import marshal
import os
from pathlib import Path
from types import CodeType

from rules.core.digests import file_stamp, settled
from rules.core.fsio import write_atomic


class CodeCache:
    """BUILD.py path -> (stamp, code), loaded once and saved when it changed."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._entries: dict[str, tuple[list[int | str], CodeType]] = {}
        self._dirty = False
        if path is None:
            return
        try:
            data = path.read_bytes()
            magic = importlib.util.MAGIC_NUMBER
            # Another Python's bytecode is not ours to run; a damaged file is ignored.
            if data[: len(magic)] == magic:
                loaded = marshal.loads(data[len(magic):])
                if isinstance(loaded, dict):
                    self._entries = loaded
        except (OSError, ValueError, EOFError, TypeError):
            pass

    def compile(self, build_file: Path) -> CodeType:
        """The code of `build_file`; raises what reading and compile() raise."""
        st = os.stat(build_file)
        stamp = file_stamp(st)
        key = str(build_file)
        entry = self._entries.get(key)
        if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == stamp \
                and isinstance(entry[1], CodeType):
            return entry[1]
        source = build_file.read_text(encoding="utf-8")
        code = compile(source, key, "exec", dont_inherit=True)
        # A file this young may be edited again without changing its stamp
        # (git's "racy clean"): it is compiled, not kept.
        if settled(st):
            self._entries[key] = (stamp, code)
            self._dirty = True
        return code

    def save(self) -> None:
        if self._path is None or not self._dirty:
            return
        try:
            write_atomic(self._path, importlib.util.MAGIC_NUMBER + marshal.dumps(self._entries),
                         durable=False)
        except (OSError, ValueError):
            pass  # only costs compiling again next time
        self._dirty = False
