"""Input blobs for the cluster: each read, checked and put into the object store once a build.

Three exports of one weights file put it once; a shared module of model code
once for every model that imports it. An action receives ObjectRefs, not
bytes, and its node fetches each blob from the object store only after it
has accepted the action, straight from whichever node holds a copy (once per
node: the other tasks on that node read the local copy).

Why Ray's object store and not the remote cache (measured in bench/bench_ray.py,
BENCHMARKS.md section 5): it needs no configured cache and no credentials on
the nodes, a put on the client is a local memory copy, and Ray moves the blob
node to node without a round trip through a server. The remote cache would
also hold blobs across builds, but the inputs of a rebuilt action are mostly
new (that is why it is rebuilt), and a node's execution layer must not depend
on the cache layer (rules/execution imports only rules/core).

A file is hashed as it is read. If its content no longer has the digest the
action key recorded, it changed after the key was computed: the blob is put
under its new digest and the node runs on what is on disk now, as a local
worker would, and the build's check after the run keeps that result out of
the cache.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class _Blob:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ref: Any = None
    size: int = 0
    puts: int = 0
    uses: int = 0
    paths: set[str] = field(default_factory=set)


class BlobUploads:
    """The blobs put into the object store by one build, by sha256."""

    def __init__(self, root: Path, put: Callable[[bytes], Any]) -> None:
        self._root = root
        self._put = put
        self._lock = threading.Lock()
        self._blobs: dict[str, _Blob] = {}

    def refs(self, inputs: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
        """(path -> digest as read, digest -> ObjectRef) for one action's inputs.

        Raises OSError when an input cannot be read; the caller builds locally,
        where the same error is reported against the target.
        """
        paths: dict[str, str] = {}
        refs: dict[str, Any] = {}
        for path, digest in sorted(inputs.items()):
            blob, read_as = self._blob_for(path, digest)
            paths[path] = read_as
            refs[read_as] = blob.ref
        return paths, refs

    def _blob_for(self, path: str, digest: str) -> tuple[_Blob, str]:
        blob = self._entry(digest)
        with blob.lock:
            if blob.ref is None:
                data = (self._root / path).read_bytes()
                actual = hashlib.sha256(data).hexdigest()
                if actual == digest:
                    self._store(blob, data)
            if blob.ref is not None:
                blob.uses += 1
                blob.paths.add(path)
                return blob, digest
        # Changed since the key was computed. Outside the first blob's lock,
        # so that two threads never wait for each other's blob.
        changed = self._entry(actual)
        with changed.lock:
            if changed.ref is None:
                self._store(changed, data)
            changed.uses += 1
            changed.paths.add(path)
        return changed, actual

    def _entry(self, digest: str) -> _Blob:
        with self._lock:
            return self._blobs.setdefault(digest, _Blob())

    def _store(self, blob: _Blob, data: bytes) -> None:
        blob.ref = self._put(data)
        blob.size = len(data)
        blob.puts += 1

    def report(self) -> dict[str, dict[str, Any]]:
        """Per digest: its size, how many times it was put (1), how many actions used it, paths."""
        with self._lock:
            blobs = dict(self._blobs)
        return {
            digest: {"size": b.size, "puts": b.puts, "uses": b.uses, "paths": sorted(b.paths)}
            for digest, b in sorted(blobs.items())
            if b.puts or b.uses
        }

    @property
    def bytes_put(self) -> int:
        with self._lock:
            return sum(b.size * b.puts for b in self._blobs.values())
