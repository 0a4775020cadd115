"""How one build uses the caches: set up on first need, degraded when the folder fails, and the
action locks that make each key build once across every workspace sharing the cache."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from rules.cache import validate
from rules.cache.health import probe
from rules.cache.local import LocalCache
from rules.cache.remote_config import RemoteError
from rules.cache.tiers import TieredCache
from rules.cache.validate import Question
from rules.config import Settings
from rules.core.errors import CacheError
from rules.loading.labels import Label
from rules.locks import action_lock_path, hold


class CacheUse:
    """The cache tiers of one build session, or None; a no-op never sets them up."""

    def __init__(self, settings: Settings, state: Path, warn: Callable[[str], None],
                 log: Callable[[Label, str], None]) -> None:
        self._settings = settings
        self._state = state
        self._warn = warn
        self._log = log
        self._lock = threading.Lock()
        self._cache: TieredCache | None = None
        self._decided = False
        self.writable = False
        self._lock_root = state

    def ready(self) -> TieredCache | None:
        """The cache tiers, set up on first use: read-write, hits only, or none.

        A cache folder that cannot be written (a read-only mount, a full disk,
        no inodes) still serves hits; one that cannot be used at all (a file)
        is skipped. Either way, one warning, and the build goes on; action
        locks then stay in the workspace's state folder.
        """
        with self._lock:
            if self._decided:
                return self._cache
            self._decided = True
            root = self._settings.cache_dir
            if root is None:
                return None
            health = probe(root)
            if health.problem:
                self._warn(health.problem)
            if health.mode == "off":
                return None
            self.writable = health.mode == "read-write"
            # A remote hit lands in the local cache first: not in a read-only one.
            remote = self._settings.remote if self.writable else None
            self._cache = TieredCache(LocalCache(root), remote, self._warn)
            if self.writable:
                # Beside the cache, so that workspaces sharing it share them.
                self._lock_root = root
            return self._cache

    def cached(self, question: Question) -> str | None:
        """Which cache holds an entry answering `question` ("local" or "remote"), checked like a
        build would check it, but without its blobs: nothing is downloaded (a corrupt local
        entry is evicted, as any lookup does)."""
        cache = self.ready()
        if cache is None:
            return None
        try:
            entry = cache.local.lookup(question.key)
            if entry is not None and validate.problem(entry, question) is None:
                return "local"
        except CacheError:
            pass
        remote = cache.remote
        if remote is not None and remote.healthy:
            try:
                data = remote.get_ac(question.key)
                if data is not None:
                    validate.accept(data, question)
                    return "remote"
            except (RemoteError, validate.Rejected):
                pass
        return None

    @contextmanager
    def action_lock(self, label: Label, key: str) -> Iterator[None]:
        """Hold the lock that makes one build of this key run at a time, everywhere."""
        self.ready()

        def lock(root: Path) -> AbstractContextManager[None]:
            return hold(action_lock_path(root, key), what=f"{label} (another build of it)",
                        timeout=self._settings.lock_timeout,
                        on_wait=lambda msg: self._log(label, msg))

        with ExitStack() as stack:
            try:
                stack.enter_context(lock(self._lock_root))
            except OSError as err:
                # The cache's lock folder failed after the probe (out of inodes
                # mid-build): the workspace's own locks still keep its builds apart.
                self._warn(f"cannot take a lock in {self._lock_root / 'locks'} "
                           f"({err.strerror or err}); locking in {self._state} instead")
                with self._lock:
                    self._lock_root = self._state
                stack.enter_context(lock(self._state))
            yield

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
