"""Hash a job's artifact while the job verifies it, so the build need not read it again.

A format writes its artifact, then reloads and checks it in its runtime
(1.8 s for a 1 GB SavedModel here). Hashing the written files meanwhile (0.8 s
for that model) costs little on a second core: TensorFlow and hashlib both
release the GIL. The job reports each file's digest with the stat it was
hashed under (rules.core.digests.file_stamp); the build takes a digest only
for a file that still has exactly that stat, and hashes anything else itself
(rules.core.files.scan_tree), as it does for a job that ran elsewhere (a Ray
node). The files are complete when hashing starts (the writer has returned)
and nothing in the job writes them afterwards, so the racy-stamp rule of the
digest cache, which guards against a writer still at work, has nothing to
catch here.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from rules.core.digests import file_stamp
from rules.core.files import SpecialFile, walk_tree
from rules.core.hashing import sha256_file

_lock = threading.Lock()
_pending: dict[str, tuple[threading.Thread, list[list[Any]]]] = {}


def written(out: str) -> None:
    """The artifact at `out` is complete: start hashing it, before it is verified."""
    found: list[list[Any]] = []

    def run() -> None:
        try:
            root = Path(out)
            files = walk_tree(root)[0] if root.is_dir() else [(root.name, root, os.lstat(root))]
            for rel, path, st in files:
                found.append([rel, file_stamp(st), sha256_file(path)])
        except (OSError, SpecialFile):
            found.clear()  # the build hashes it, and says what is wrong

    thread = threading.Thread(target=run, name="rules-keras-output-hash", daemon=True)
    with _lock:
        _pending[out] = (thread, found)
    thread.start()


def collect(out: str) -> list[list[Any]]:
    """What written(out) found, once its thread is done: [path, stamp, sha256] per file; empty
    when nothing was started (a format that does not call written) or the hashing failed."""
    with _lock:
        pending = _pending.pop(out, None)
    if pending is None:
        return []
    thread, found = pending
    thread.join()
    return found


def known(reported: Any) -> dict[str, tuple[list[int | str], str]]:
    """A job's report as scan_tree's `known`; rows of any other shape are ignored."""
    table: dict[str, tuple[list[int | str], str]] = {}
    if not isinstance(reported, (list, tuple)):
        return table
    for row in reported:
        if (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)
                and isinstance(row[1], list) and isinstance(row[2], str)):
            table[row[0]] = (row[1], row[2])
    return table
