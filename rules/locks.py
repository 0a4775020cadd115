"""Inter-process and inter-thread locks that guard work which must not run twice."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from filelock import FileLock, Timeout

from rules.core.errors import RulesError
from rules.core.hashing import sha256_bytes

LOCKS_DIR = "locks"


class LockTimeout(RulesError):
    """Another holder kept a lock past the caller's timeout.

    Not a TimeoutError: that is an OSError, and callers that turn OSErrors from
    the cache into warnings must not swallow this one.
    """


def action_lock_path(root: Path, key: str) -> Path:
    """The lock that serialises building the action with this key (64 hex chars)."""
    return root / LOCKS_DIR / f"action-{key}.lock"


def output_lock_path(root: Path, rel_output_path: str | PurePosixPath) -> Path:
    """The lock that serialises writing one output path, hashed into a flat, safe file name."""
    name = PurePosixPath(rel_output_path).as_posix()
    return root / LOCKS_DIR / f"output-{sha256_bytes(name.encode('utf-8'))}.lock"


@contextmanager
def hold(
    lock_path: Path,
    *,
    what: str,
    timeout: float,
    notice_after: float = 2.0,
    on_wait: Callable[[str], None],
) -> Iterator[None]:
    """Hold `lock_path` exclusively for the body; excludes other processes and other threads.

    Acquisition first tries without waiting. If it has to wait, `on_wait` is
    called once after `notice_after` seconds so the user knows why nothing
    happens; after `timeout` seconds in total LockTimeout is raised.
    """
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds. Received: timeout={timeout}")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh, non-singleton instance per hold: each one opens its own file
    # description, and flock() conflicts between descriptions even inside one
    # process, so two threads (doit -n 2) exclude each other. A shared or
    # singleton instance would instead be reentrant and let the second thread in.
    lock = FileLock(lock_path, is_singleton=False, thread_local=False)
    start = time.monotonic()
    if not _try(lock, blocking=False):
        first = min(notice_after, timeout)
        if not _try(lock, wait=first):
            if timeout <= notice_after:
                raise LockTimeout(_timeout_message(what, lock_path, timeout))
            on_wait(f"waiting for {what} (lock {lock_path})")
            remaining = max(timeout - (time.monotonic() - start), 0.0)
            if not _try(lock, wait=remaining):
                raise LockTimeout(_timeout_message(what, lock_path, timeout))
    try:
        yield
    finally:
        lock.release()


def _try(lock: FileLock, *, blocking: bool = True, wait: float = 0.0) -> bool:
    try:
        lock.acquire(timeout=wait, blocking=blocking)
    except Timeout:
        return False
    return True


def _timeout_message(what: str, lock_path: Path, timeout: float) -> str:
    # The OS drops a flock() when its holder dies, however it dies, so a lock
    # file left on disk is harmless and a timeout means a live holder. Only
    # where flock() is unavailable (some network filesystems) does filelock
    # fall back to a marker file that can outlive a crash: the hint is for that.
    return (
        f"timed out after {timeout:g}s waiting for {what} (lock {lock_path}). "
        "Another doit process is probably building it: let it finish, or raise the timeout. "
        "If no other build is running, the lock file is stale; remove it and retry."
    )
