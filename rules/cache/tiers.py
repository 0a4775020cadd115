"""Lookup order local cache, then remote; remote hits land in the local cache; uploads after builds.

Every failure of either tier becomes one warning and a miss (or a skipped
store): a cache can make a build faster, never make it fail. Every entry of
either tier passes rules.cache.validate before it is used or kept; a remote
needs only get_ac/get_blobs/put_ac/put_blobs, `healthy`, `config` and close().
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rules.cache import validate
from rules.cache.local import LocalCache
from rules.cache.reapi import Digest
from rules.cache.records import ActionResult, CacheCorrupt
from rules.cache.remote_config import RemoteConfig, RemoteError
from rules.cache.validate import Question, Rejected
from rules.core.errors import CacheError
from rules.core.files import FileEntry
from rules.core.settings import format_size

if TYPE_CHECKING:
    from rules.cache.grpc_remote import GrpcRemoteCache
    from rules.cache.remote import RemoteCache


@dataclass(frozen=True)
class Hit:
    """A complete entry in the local cache, and where it came from ('local' or 'remote')."""

    result: ActionResult
    source: str


@dataclass(frozen=True)
class Corrupt:
    """A cache held an entry for the key that was wrong, and it was not used (nor kept)."""

    source: str
    problem: str


class TieredCache:
    """The local cache plus an optional remote (read-only unless its config allows upload)."""

    def __init__(
        self,
        local: LocalCache,
        remote: RemoteConfig | None,
        warn: Callable[[str], None],
    ) -> None:
        self.local = local
        self.remote: RemoteCache | GrpcRemoteCache | None = None
        if remote is not None and remote.is_grpc:
            # grpcio costs a no-op build ~100 ms; only a grpc(s):// remote loads it.
            from rules.cache.grpc_remote import GrpcRemoteCache

            self.remote = GrpcRemoteCache(remote)
        elif remote is not None:
            # http.client and ssl cost a no-op build 30 ms; only load them when used.
            from rules.cache.remote import RemoteCache

            self.remote = RemoteCache(remote)
        self._warn = warn
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def fetch(self, question: Question) -> Hit | Corrupt | None:
        """The entry answering `question` from the local cache, else from the remote (then kept
        locally). A wrong entry is never used: it costs one warning, and a local one is evicted."""
        key, label = question.key, question.label
        corrupt: Corrupt | None = None
        try:
            result = self.local.lookup(key)
        except CacheCorrupt as err:
            self._warning(f"corrupt-{key}", f"{label}: {err}; building it")
            corrupt, result = Corrupt("local", str(err)), None
        except CacheError as err:
            self._warning("local", f"local cache lookup failed, building instead: {err}")
            result = None
        if result is not None:
            problem = validate.problem(result, question)
            if problem is None:
                return Hit(result, "local")
            self.local.evict(key)
            self._warning(f"corrupt-{key}", f"{label}: local cache entry {key[:12]} in "
                          f"{self.local.root} is wrong for it: {problem}; it was removed, "
                          "building it")
            corrupt = Corrupt("local", problem)
        if self.remote is None or not self.remote.healthy:
            return corrupt
        where = self.remote.config.url
        try:
            data = self.remote.get_ac(key)
            if data is None:
                return corrupt
            entry = validate.accept(data, question)
            limit = self.remote.config.max_blob_size
            big = [f for f in entry.files if f.size > limit]
            if big:
                raise Rejected(f"it claims {big[0].path} has {big[0].size} bytes, above "
                               f"remote_max_blob_size ({format_size(limit)})")
            report = self.remote.get_blobs(
                [Digest(f.sha256, f.size) for f in entry.files], self.local.cas_path
            )
            if report.missing:
                return corrupt  # an incomplete remote entry is a miss, as in Bazel
            return Hit(self.local.put_entry(key, data), "remote")
        except Rejected as err:
            # Never restored, and never kept: nothing of it reached ac/.
            self._warning(f"rejected-{key}", f"{label}: remote cache {where} answered key "
                          f"{key[:12]} with an entry that is not its artifact: {err}; not used, "
                          "building locally")
            return Corrupt("remote", str(err))
        except RemoteError as err:
            self._warning(type(err).__name__, f"remote cache: {err}; building locally")
        except CacheError as err:
            self._warning("remote-entry", f"remote cache entry {key[:12]} unusable: {err}")
        return corrupt

    def restore(self, question: Question, hit: Hit, dest: Path) -> bool | Corrupt:
        """Materialise `hit` at the new path `dest`; False or Corrupt (after a warning) means
        rebuild, Corrupt when a blob turned out corrupt (and was evicted)."""
        key = question.key
        try:
            self.local.materialize(key, hit.result, dest)
        except CacheCorrupt as err:
            self._warning(f"corrupt-{key}", f"{question.label}: {err}")
            return Corrupt(hit.source, str(err))
        except CacheError as err:
            self._warning("restore", f"cache entry {key[:12]} could not be restored ({err}); "
                          "rebuilding")
            return False
        return True

    def store(self, key: str, artifact: Path, metadata: Mapping[str, Any], label: str,
              scanned: tuple[tuple[FileEntry, ...], tuple[str, ...]] | None = None) -> None:
        """Put a verified build of `label` in the local cache, then upload it when this client
        may; `scanned` is the artifact's scan_tree, when the build already hashed it."""
        try:
            result = self.local.store(key, artifact, metadata, label, scanned)
        except CacheError as err:
            self._warning("store", f"could not store {key[:12]} in the local cache: {err}")
            return
        if self.remote is None or not self.remote.config.upload or not self.remote.healthy:
            return
        try:
            # Blobs first and the AC entry last, each with a Content-Length, so
            # a server never holds an entry whose blobs are missing.
            self.remote.put_blobs({f.sha256: self.local.cas_path(f.sha256) for f in result.files})
            self.remote.put_ac(key, result.to_reapi())
        except RemoteError as err:
            self._warning(type(err).__name__, f"remote cache upload failed: {err}")

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()

    def _warning(self, kind: str, message: str) -> None:
        # One warning per kind: with an unreachable server, 100 targets would
        # otherwise print the same line 100 times.
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        self._warn(message)
