"""Publish a staged artifact into artifacts/ so readers see the old or the new one, never a mix."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from rules.core.faults import pause_point
from rules.core.fsio import discard, remove_abandoned, temp_path
from rules.storage import manifest as manifest_io
from rules.storage.manifest import Manifest

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def staging_dir(dest: Path) -> Path:
    """A fresh folder beside `dest`; the artifact is staged in it under dest's own name.

    Beside `dest`, so the publishing rename never crosses filesystems; under
    dest's own name, so the file names recorded in manifests and cache
    entries never carry a temporary name (and Keras, which only saves weights
    to a `.weights.h5` path, is satisfied).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The caller holds dest's action lock, so a staging or replaced copy of
    # dest whose process is gone was abandoned by a killed build.
    remove_abandoned(dest.parent, ("staging", "old"), dest.name)
    folder = temp_path(dest, "staging")
    folder.mkdir()
    return folder


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE) where the OS offers it."""
    import ctypes  # only a publish needs it, never a no-op
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(a))


def publish(dest: Path, staged: Path, manifest: Manifest) -> None:
    """Move `staged` to `dest`, then write the manifest; the caller holds the output lock.

    A directory cannot be replaced by rename while the old one exists, so the
    two are swapped atomically (RENAME_EXCHANGE) and the old one deleted: a
    SavedModel reader or TF Serving poller sees either version whole. Where
    the OS cannot swap, the old directory is moved aside first, leaving a
    moment with no artifact but never a half-written one. The manifest goes
    last: a crash before it leaves a manifest whose files do not match, which
    reads as out of date.

    Nothing here is fsynced, unlike the cache: after a power loss a manifest
    may survive its files, but the up-to-date check compares every file's
    size and digest, so the target just rebuilds. Three fsyncs per target
    cost more than the whole restore of it.
    """
    if staged.is_dir() and dest.is_dir() and not dest.is_symlink():
        if _exchange(staged, dest):
            pause_point("publish")
            discard(staged)
        else:
            old = temp_path(dest, "old")
            os.rename(dest, old)
            os.rename(staged, dest)
            discard(old)
    else:
        pause_point("publish")
        # os.replace cannot put a directory over a file, nor a file over a
        # directory: the old artifact of the other kind goes first.
        if os.path.lexists(dest) and (staged.is_dir() or dest.is_dir()):
            discard(dest)
        os.replace(staged, dest)
    manifest_io.write(dest, manifest)


def remove(dest: Path) -> None:
    """Delete an artifact and its manifest (doit clean)."""
    manifest_io.manifest_path(dest).unlink(missing_ok=True)
    discard(dest)
