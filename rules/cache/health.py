"""Can the local cache folder be used, and how: read-write, for hits only, or not at all.

CI images and NFS shares often provide a pre-filled cache on a read-only
mount; a disk can run out of space or of inodes; a setting can name a file.
None of these may fail a build: the build asks once, before it first needs
the cache, and gets one answer and one sentence to warn with.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rules.core.fsio import temp_path

Mode = Literal["read-write", "read-only", "off"]
# Errors that say the folder cannot take new files, while what it holds can
# still be read: a read-only mount or folder, a full disk, no inodes left.
_CANNOT_WRITE = {
    errno.EROFS: "is on a read-only filesystem",
    errno.EACCES: "is not writable by this user",
    errno.EPERM: "is not writable by this user",
    errno.ENOSPC: "has no space or no inodes left",
    errno.EDQUOT: "is over its disk quota",
}


@dataclass(frozen=True)
class Health:
    """How the build may use the cache folder; `problem` is the warning, "" when all is well."""

    mode: Mode
    problem: str = ""


def probe(root: Path) -> Health:
    """Create the folder if needed and write (then remove) one file in it."""
    if root.exists() and not root.is_dir():
        return Health("off", f"the cache folder {root} is a file, not a folder; building "
                             "without the cache (fix cache_dir / RULES_KERAS_CACHE_DIR)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe_file = temp_path(root / "probe")
        fd = os.open(probe_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe_file)
    except OSError as err:
        why = _CANNOT_WRITE.get(err.errno or 0)
        if why is not None and os.access(root, os.R_OK | os.X_OK):
            return Health("read-only", f"the cache folder {root} {why}: it serves hits, but "
                                       "nothing is stored in it and locks stay in the workspace")
        return Health("off", f"the cache folder {root} cannot be used ({err.strerror or err}); "
                             "building without the cache")
    return Health("read-write")
