"""What the export server knows of itself: its log line, its threads, its socket's identity."""

from __future__ import annotations

import os
import time
from pathlib import Path


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {message}", flush=True)


def thread_count() -> int:
    """Threads of this process; a fork is only safe while nothing added any."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def inode(path: Path) -> tuple[int, int] | None:
    """The file's identity, to tell our socket from a successor's under the same name."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
