"""Lookup order local cache, then remote; remote hits land in the local cache; uploads after builds.

Every failure of either tier becomes one warning and a miss (or a skipped
store): a cache can make a build faster, never make it fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rules.cache.local import LocalCache
from rules.cache.records import ActionResult
from rules.cache.remote_config import RemoteConfig, RemoteError
from rules.core.errors import CacheError

if TYPE_CHECKING:
    from rules.cache.grpc_remote import GrpcRemoteCache
    from rules.cache.remote import RemoteCache


@dataclass(frozen=True)
class Hit:
    """A complete entry in the local cache, and where it came from ('local' or 'remote')."""

    result: ActionResult
    source: str


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

    def fetch(self, key: str) -> Hit | None:
        """The entry for `key` from the local cache, else from the remote (then kept locally)."""
        try:
            result = self.local.lookup(key)
        except CacheError as err:
            self._warning("local", f"local cache lookup failed, building instead: {err}")
            result = None
        if result is not None:
            return Hit(result, "local")
        if self.remote is None or not self.remote.healthy:
            return None
        try:
            data = self.remote.get_ac(key)
            if data is None:
                return None
            entry = ActionResult.from_reapi(data)
            report = self.remote.get_blobs(
                [_Digest(f.sha256, f.size) for f in entry.files], self.local.cas_path
            )
            if report.missing:
                return None  # an incomplete remote entry is a miss, as in Bazel
            return Hit(self.local.put_entry(key, data), "remote")
        except RemoteError as err:
            self._warning(type(err).__name__, f"remote cache: {err}; building locally")
        except CacheError as err:
            self._warning("remote-entry", f"remote cache entry {key[:12]} unusable: {err}")
        return None

    def restore(self, key: str, hit: Hit, dest: Path) -> bool:
        """Materialise `hit` at the new path `dest`; False (after a warning) means rebuild."""
        try:
            self.local.materialize(key, hit.result, dest)
        except CacheError as err:
            self._warning("restore", f"cache entry {key[:12]} could not be restored ({err}); "
                          "rebuilding")
            return False
        return True

    def store(self, key: str, artifact: Path, metadata: Mapping[str, Any]) -> None:
        """Put a verified build in the local cache, then upload it when this client may."""
        try:
            result = self.local.store(key, artifact, metadata)
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


@dataclass(frozen=True)
class _Digest:
    hash: str
    size_bytes: int
