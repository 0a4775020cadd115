"""Remote cache over REAPI v2 gRPC (BuildBuddy, EngFlow, Buildbarn, bazel-remote, BuildGrid...).

The same narrow interface and guarantees as the HTTP RemoteCache (remote.py),
so tiers.py treats both alike: read-only unless `config.upload`, every
download verified, every failure a RemoteError, and the same circuit breaker.
The first call asks GetCapabilities; a server without sha256 is refused with
one clear error, and its batch limit and AC update permission are kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NoReturn, TypeVar

from rules.cache import reapi_rpc as rpc
from rules.cache.grpc_blobs import BlobIO, BlobStatusError
from rules.cache.grpc_channel import Channel, open_channel
from rules.cache.grpc_errors import InstanceError, code_name, status_error
from rules.cache.reapi import DecodeError, Digest
from rules.cache.remote_config import RemoteConfig, RemoteError
from rules.cache.transfer import (
    EMPTY_SHA256,
    BlobDigest,
    DownloadReport,
    RemoteAuthError,
    RemoteClient,
    RemoteCorrupt,
    RemoteUnavailable,
    UploadReport,
    run_parallel,
    store_blob,
)
from rules.core.hashing import sha256_file

# The action key is not the digest of a REAPI Action message, so it has no
# true size; servers key the AC by (hash, size) (BuildGrid does), so every
# client must send the same one. Not 0: by convention that is the empty blob.
ACTION_DIGEST_SIZE = 1
_T = TypeVar("_T")


@dataclass(frozen=True)
class GrpcStats:
    """Counters since the client was created: RPCs and ByteStream transfers.

    Only tests read them, and keep them for a reason: BuildGrid's logs cannot
    show that a breaker-tripped call never reached the network, nor which
    blobs went by ByteStream rather than in a batch.
    """

    calls: int
    streams: int


class GrpcRemoteCache(RemoteClient):
    """Client for one REAPI cache instance, shared by all threads of a build.

    Circuit breaker as in RemoteCache: the first RemoteUnavailable, or a
    rejected read (RemoteAuthError), or a server that cannot serve us at all
    (no sha256, unknown instance), marks it unhealthy; later calls raise the
    same error type at once without touching the network.
    """

    def __init__(self, config: RemoteConfig) -> None:
        super().__init__(config)
        self._lock = threading.Lock()  # guards the channel and capabilities
        self._stats_lock = threading.Lock()
        self._channel: Channel | None = None
        self._blobs: BlobIO | None = None
        self._update_enabled = False
        self._calls = 0

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None
                self._blobs = None

    def stats(self) -> GrpcStats:
        streams = 0 if self._blobs is None else self._blobs.streams
        return GrpcStats(self._calls, streams)

    @property
    def batch_limit(self) -> int:
        """The batch size in use (after GetCapabilities), e.g. to pick a ByteStream-sized blob."""
        return self._ready().batch_limit

    # -- action cache ---------------------------------------------------

    def get_ac(self, key: str) -> bytes | None:
        """The encoded ActionResult under `key`, or None on a miss (NOT_FOUND)."""
        import grpc

        channel, _ = self._connected()
        request = rpc.get_action_result_request(self.config.instance_name, _action(key))
        with self._guard(f"GetActionResult {key[:12]}", read=True):
            try:
                reply: bytes = channel.channel.unary_unary(rpc.GET_ACTION_RESULT)(
                    request, timeout=self.config.timeout, metadata=channel.metadata
                )
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                raise
        return reply

    def put_ac(self, key: str, body: bytes) -> None:
        """UpdateActionResult; requires `config.upload` and a server that allows updates."""
        self._require_upload()
        channel, _ = self._connected()
        if not self._update_enabled:
            raise RemoteError(
                f"remote cache {self.config.url} does not allow action cache updates "
                "(GetCapabilities: update_enabled is false); set remote_upload = false"
            )
        request = rpc.update_action_result_request(self.config.instance_name, _action(key), body)
        with self._guard(f"UpdateActionResult {key[:12]}", read=False):
            channel.channel.unary_unary(rpc.UPDATE_ACTION_RESULT)(
                request, timeout=self.config.timeout, metadata=channel.metadata
            )

    # -- content-addressed storage ---------------------------------------

    def has_blob(self, sha256: str, size: int) -> bool:
        """Whether the server has the blob (FindMissingBlobs; REAPI digests need the size)."""
        if sha256 == EMPTY_SHA256:
            return True
        blobs = self._ready()
        with self._guard("FindMissingBlobs", read=True):
            return not blobs.find_missing([Digest(sha256, size)])

    def get_blob(self, sha256: str, size: int, dest: Path) -> bool:
        """Download one blob to `dest`, verified; False if the server does not have it."""
        report = self.get_blobs([Digest(sha256, size)], lambda _: dest)
        return not report.missing

    def get_blobs(
        self,
        digests: Iterable[BlobDigest],
        dest_dir: Path | Callable[[str], Path],
    ) -> DownloadReport:
        """Blobs to `dest_dir/<sha256>` (or `dest_dir(sha256)`): batches, then ByteStream.

        Missing blobs are reported, not raised; the first error stops the
        transfers not yet started. Blobs already written stay (each was verified).
        """
        unique = {d.hash: d.size_bytes for d in digests}
        if any(size < 0 for size in unique.values()):
            raise ValueError(f"blob sizes must be >= 0. Received: {unique}")

        def dest(sha256: str) -> Path:
            return dest_dir(sha256) if callable(dest_dir) else dest_dir / sha256

        fetched: list[str] = []
        if unique.pop(EMPTY_SHA256, None) == 0:
            # Never asked for: servers need not store it, and it needs no network.
            store_blob(dest(EMPTY_SHA256), (), EMPTY_SHA256, 0, "the empty blob")
            fetched.append(EMPTY_SHA256)
        if not unique:
            return DownloadReport(tuple(fetched), (), 0)
        blobs = self._ready()
        plan = blobs.plan([Digest(h, s) for h, s in unique.items()], self.config.parallel)
        work: list[Callable[[], tuple[list[str], list[str], int]]] = [
            partial(blobs.read_batch, batch, dest) for batch in plan.batches
        ]
        work += [partial(blobs.read_stream, d, dest) for d in plan.streams]
        missing: list[str] = []
        total = 0
        for got, lacking, size in self._parallel("download", work, read=True):
            fetched += got
            missing += lacking
            total += size
        return DownloadReport(tuple(sorted(fetched)), tuple(sorted(missing)), total)

    def put_blob(self, sha256: str, src: Path) -> bool:
        """Upload `src` as blob `sha256` unless the server has it; True if it was sent."""
        return bool(self.put_blobs({sha256: src}).uploaded)

    def put_blobs(
        self, files: Mapping[str, Path]
    ) -> UploadReport:
        """Upload `{sha256: path}`: hash each file, FindMissingBlobs, then send only the missing.

        A wrong blob under a CAS key would be served to every reader, so each
        file is hashed before anything is sent.
        """
        self._require_upload()
        digests = [_checked_digest(sha256, src) for sha256, src in files.items()]
        digests = [d for d in digests if d.hash != EMPTY_SHA256]
        if not digests:
            return UploadReport((), tuple(files), 0)
        blobs = self._ready()
        with self._guard("FindMissingBlobs", read=False):
            missing = {d.hash for d in blobs.find_missing(digests)}
        send = [d for d in digests if d.hash in missing]
        plan = blobs.plan(send, self.config.parallel)
        work: list[Callable[[], int]] = [
            partial(blobs.write_batch, batch, files) for batch in plan.batches
        ]
        work += [partial(blobs.write_stream, d, files) for d in plan.streams]
        total = sum(self._parallel("upload", work, read=False))
        uploaded = sorted(missing & set(files))
        present = sorted(set(files) - missing)
        return UploadReport(tuple(uploaded), tuple(present), total)

    # -- plumbing ---------------------------------------------------------

    def _parallel(
        self, what: str, work: Sequence[Callable[[], _T]], *, read: bool
    ) -> list[_T]:
        def guarded(job: Callable[[], _T]) -> _T:
            with self._guard(what, read=read):
                return job()

        return run_parallel([partial(guarded, job) for job in work], self.config.parallel,
                            "grpc-cache")

    def _connected(self) -> tuple[Channel, BlobIO]:
        blobs = self._ready()
        channel = self._channel
        if channel is None:
            raise RemoteError(f"remote cache {self.config.url} was closed")
        return channel, blobs

    def _ready(self) -> BlobIO:
        """The CAS client, after one GetCapabilities per process (under the lock)."""
        self._fail_fast("GetCapabilities")
        with self._lock:
            if self._blobs is not None:
                return self._blobs
            if self._channel is None:
                try:
                    self._channel = open_channel(self.config)
                except RemoteError as err:
                    self._down = err
                    raise
            channel = self._channel
            request = rpc.get_capabilities_request(self.config.instance_name)
            try:
                with self._guard("GetCapabilities", read=True):
                    reply: bytes = channel.channel.unary_unary(rpc.CAPABILITIES)(
                        request, timeout=self.config.timeout, metadata=channel.metadata
                    )
                    caps = rpc.decode_capabilities(reply)
                if rpc.SHA256 not in caps.digest_functions:
                    raise RemoteError(
                        f"remote cache {self.config.url} does not offer sha256 digests "
                        f"(GetCapabilities lists digest functions {list(caps.digest_functions)}); "
                        "rules_keras keys every blob by sha256, so it cannot use this cache"
                    )
            except RemoteError as err:
                # Whatever stops the first call (no server, no such instance,
                # no sha256, no credentials) will stop every later one.
                if self._down is None:
                    self._down = err
                raise
            self._update_enabled = caps.update_enabled
            self._blobs = BlobIO(
                channel, self.config.instance_name, self.config.timeout,
                caps.max_batch_total_size_bytes,
            )
            return self._blobs

    def _fail_fast(self, what: str) -> None:
        down = self._down
        if down is not None:
            raise type(down)(f"skipped {what} on {self.config.url}; earlier in this build: {down}")

    @contextmanager
    def _guard(self, what: str, *, read: bool) -> Iterator[None]:
        """Map gRPC failures to RemoteError, tripping the breaker where they will recur."""
        import grpc

        self._fail_fast(what)
        with self._stats_lock:
            self._calls += 1
        try:
            yield
        except grpc.RpcError as err:
            self._raise(what, err.code().name, err.details() or "", read)
        except BlobStatusError as err:
            self._raise(what, code_name(err.code), str(err), read)
        except DecodeError as err:
            raise RemoteCorrupt(f"remote cache {self.config.url}: {what}: {err}") from None

    def _raise(self, what: str, code: str, details: str, read: bool) -> NoReturn:
        error = status_error(self.config, what, code, details, read=read)
        # Credentials, instance and server do not change within a process; a
        # refused write only means these credentials cannot write, so reads go on.
        trips = isinstance(error, RemoteUnavailable | InstanceError) or (
            read and isinstance(error, RemoteAuthError)
        )
        if trips:
            self._trip(error)
        raise error


def _action(key: str) -> Digest:
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"ac keys must be 64 lowercase hex characters (sha256). Received: {key!r}")
    return Digest(key, ACTION_DIGEST_SIZE)


def _checked_digest(sha256: str, src: Path) -> Digest:
    try:
        size = src.stat().st_size
        actual = sha256_file(src)
    except OSError as err:
        raise RemoteError(f"cannot read {src} for upload: {err.strerror or err}") from err
    if actual != sha256:
        raise RemoteError(
            f"refusing to upload {src} as {sha256}: its content hashes to {actual}; "
            "the local file changed or is corrupt"
        )
    return Digest(sha256, size)
