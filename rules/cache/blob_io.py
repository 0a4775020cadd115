"""Moving a blob's bytes in and out of the CAS: by the kernel, and hashed where it counts."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from rules.core.errors import CacheError
from rules.core.files import FileEntry
from rules.core.fsio import CHUNK, copy_range, discard, temp_path, verified

BLOB_MODE = 0o444

# From this size on, the kernel copies a blob while another thread hashes it:
# both release the GIL, so a restore costs about the larger of the two, not
# their sum (a 1 GB SavedModel: 1.0 s serially here). Below it a thread costs
# more than it saves.
PARALLEL_COPY = 16 << 20


def copy_while_hashing(src_fd: int, dst_fd: int, entry: FileEntry, what: str) -> None:
    """Copy the blob to dst in the kernel while a thread checks its size and sha256 (raising
    DigestMismatch after the copy when they are wrong; the caller removes dst)."""
    found: list[BaseException] = []

    def chunks() -> Iterator[bytes]:
        offset = 0
        while chunk := os.pread(src_fd, CHUNK, offset):
            offset += len(chunk)
            yield chunk

    def check() -> None:
        try:
            for _ in verified(chunks(), entry.sha256, entry.size, what):
                pass
        except BaseException as err:  # re-raised in the caller's thread
            found.append(err)

    thread = threading.Thread(target=check, name="rules-keras-restore-hash")
    thread.start()
    try:
        copy_range(src_fd, dst_fd, entry.size)
    finally:
        thread.join()
    if found:
        raise found[0]


def store_blob(source: Path, blob: Path, entry: FileEntry) -> None:
    """Copy `source`, whose scan gave `entry`, to the new blob `blob`, read-only.

    The kernel copies the bytes (no read into Python, no second hash). A
    source that changed since it was hashed (its size or mtime moved while
    this copied it) is refused: the blob would not match its name.
    """
    tmp = temp_path(blob)
    try:
        with open(source, "rb") as src, open(tmp, "xb") as out:
            before = os.fstat(src.fileno())
            if before.st_size != entry.size:
                raise CacheError(f"{source} changed after it was hashed; it was not cached")
            copy_range(src.fileno(), out.fileno(), entry.size)
            after = os.fstat(src.fileno())
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise CacheError(f"{source} changed while it was being stored; it was not cached")
            os.fchmod(out.fileno(), BLOB_MODE)
        os.replace(tmp, blob)
    except BaseException:
        discard(tmp)
        raise
