"""CAS transfers over REAPI: FindMissingBlobs, batches for small blobs, ByteStream for large ones.

A blob goes in a BatchRead/BatchUpdate request when it fits the server's
batch limit, else through ByteStream, streamed in CHUNK pieces so memory does
not grow with the blob. Every download is checked (size and sha256) while it
streams into a temp file beside its destination, which only a verified blob
replaces (rules.core.fsio). gRPC errors pass through as `grpc.RpcError`, and
a failed blob in a batch as `BlobStatusError`; grpc_remote maps both.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rules.cache import reapi_rpc as rpc
from rules.cache.grpc_channel import Channel
from rules.cache.reapi import Digest
from rules.cache.remote_config import RemoteError
from rules.cache.transfer import store_blob
from rules.core.fsio import CHUNK

# REAPI's default when a server states no limit: gRPC's own 4 MiB message cap.
DEFAULT_BATCH_BYTES = 4 << 20
# Room left in a batch for the request's own fields (digests, tags, instance name).
_BATCH_OVERHEAD = 16 << 10
_PER_BLOB_OVERHEAD = 128
# FindMissingBlobs requests stay far below any message limit at this count.
_FIND_MISSING_CHUNK = 4096
# Streams get `timeout` plus this long per byte: a deadline must cover a whole
# 1 GiB transfer, yet a stalled one must still end.
_SLOWEST_BYTES_PER_S = 1 << 20
NOT_FOUND = 5


class BlobStatusError(Exception):
    """The server failed one blob of a batch with this gRPC status code."""

    def __init__(self, code: int, message: str, sha256: str) -> None:
        super().__init__(f"blob {sha256[:12]}: {message or 'failed'} (gRPC status {code})")
        self.code = code


@dataclass(frozen=True)
class Plan:
    """Digests grouped by how they travel: batches that fit the limit, and ByteStream ones."""

    batches: tuple[tuple[Digest, ...], ...]
    streams: tuple[Digest, ...]


class BlobIO:
    """The CAS calls for one instance on one channel; thread-safe like the channel."""

    def __init__(self, channel: Channel, instance: str, timeout: float, batch_limit: int) -> None:
        self._channel = channel
        self._instance = instance
        self._timeout = timeout
        self.batch_limit = min(batch_limit or DEFAULT_BATCH_BYTES, DEFAULT_BATCH_BYTES * 16)
        self.streams = 0
        """ByteStream transfers started, both ways (tests and benchmarks read it)."""
        self._lock = threading.Lock()

    def plan(self, digests: Sequence[Digest], spread: int = 1) -> Plan:
        """Blobs over the limit go to ByteStream; the rest into batches, largest first, each to
        the least loaded batch that has room.

        At least `spread` batches are made when there are that many blobs: a
        target's few small blobs then travel, and are fsynced, in parallel,
        as the HTTP client's parallel GETs are, not one after another.
        """
        budget = self.batch_limit - _BATCH_OVERHEAD
        streams = [d for d in digests if d.size_bytes + _PER_BLOB_OVERHEAD > budget]
        small = sorted((d for d in digests if d.size_bytes + _PER_BLOB_OVERHEAD <= budget),
                       key=lambda d: d.size_bytes, reverse=True)
        batches: list[list[Digest]] = []
        loads: list[int] = []
        for digest in small:
            cost = digest.size_bytes + _PER_BLOB_OVERHEAD
            emptiest = min(range(len(loads)), key=loads.__getitem__, default=None)
            if len(batches) < spread or emptiest is None or loads[emptiest] + cost > budget:
                batches.append([digest])
                loads.append(cost)
            else:
                batches[emptiest].append(digest)
                loads[emptiest] += cost
        return Plan(tuple(tuple(batch) for batch in batches), tuple(streams))

    def find_missing(self, digests: Sequence[Digest]) -> list[Digest]:
        call = self._unary(rpc.FIND_MISSING_BLOBS)
        missing: list[Digest] = []
        for start in range(0, len(digests), _FIND_MISSING_CHUNK):
            request = rpc.find_missing_blobs_request(
                self._instance, digests[start : start + _FIND_MISSING_CHUNK]
            )
            missing += rpc.decode_find_missing_blobs(
                call(request, timeout=self._timeout, metadata=self._channel.metadata)
            )
        return missing

    def read_batch(
        self, digests: Sequence[Digest], dest: Callable[[str], Path]
    ) -> tuple[list[str], list[str], int]:
        """(fetched, missing, bytes) for one batch, each fetched blob verified and in place."""
        request = rpc.batch_read_blobs_request(self._instance, digests)
        size = sum(d.size_bytes for d in digests)
        reply = self._unary(rpc.BATCH_READ_BLOBS)(
            request, timeout=self._deadline(size), metadata=self._channel.metadata
        )
        wanted = {d.hash: d.size_bytes for d in digests}
        fetched: list[str] = []
        missing: list[str] = []
        total = 0
        for response in rpc.decode_batch_responses(reply, with_data=True):
            sha256 = response.digest.hash
            if sha256 not in wanted:
                continue  # not asked for; never written anywhere
            if response.status.code == NOT_FOUND:
                missing.append(sha256)
            elif response.status.code:
                raise BlobStatusError(response.status.code, response.status.message, sha256)
            else:
                store_blob(dest(sha256), [response.data], sha256, wanted[sha256],
                           f"blob {sha256[:12]}")
                fetched.append(sha256)
                total += wanted[sha256]
        answered = set(fetched) | set(missing)
        missing += [sha256 for sha256 in wanted if sha256 not in answered]
        return fetched, missing, total

    def read_stream(
        self, digest: Digest, dest: Callable[[str], Path]
    ) -> tuple[list[str], list[str], int]:
        """ByteStream.Read one blob to `dest(sha256)`; (fetched, missing, bytes) as read_batch."""
        import grpc

        self._count_stream()
        call = self._channel.channel.unary_stream(rpc.BYTESTREAM_READ)
        request = rpc.read_request(self._resource("blobs", digest))
        responses = call(
            request, timeout=self._deadline(digest.size_bytes), metadata=self._channel.metadata
        )

        def chunks() -> Iterator[bytes]:
            for message in responses:
                yield rpc.decode_read_response(message)

        try:
            store_blob(dest(digest.hash), chunks(), digest.hash, digest.size_bytes,
                       f"blob {digest.hash[:12]}")
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return [], [digest.hash], 0
            raise
        finally:
            responses.cancel()
        return [digest.hash], [], digest.size_bytes

    def write_batch(self, batch: Sequence[Digest], files: Mapping[str, Path]) -> int:
        """BatchUpdateBlobs; each file is read whole (it fits a batch) and checked first."""
        payload = [(digest, _read_checked(files[digest.hash], digest)) for digest in batch]
        size = sum(d.size_bytes for d in batch)
        reply = self._unary(rpc.BATCH_UPDATE_BLOBS)(
            rpc.batch_update_blobs_request(self._instance, payload),
            timeout=self._deadline(size),
            metadata=self._channel.metadata,
        )
        for response in rpc.decode_batch_responses(reply, with_data=False):
            if response.status.code:
                raise BlobStatusError(
                    response.status.code, response.status.message, response.digest.hash
                )
        return size

    def write_stream(
        self, digest: Digest, files: Mapping[str, Path]
    ) -> int:
        """ByteStream.Write `src` (hashed by the caller) in CHUNK pieces.

        The server re-hashes what it receives, so a file that changes after
        the caller hashed it is refused there, never stored under `digest`.
        """
        self._count_stream()
        src = files[digest.hash]
        resource = self._resource(f"uploads/{uuid.uuid4()}/blobs", digest)

        def requests() -> Iterator[bytes]:
            offset = 0
            with _reading(src) as handle:
                while True:
                    data = handle.read(CHUNK)
                    last = offset + len(data) >= digest.size_bytes or not data
                    yield rpc.write_request(resource if offset == 0 else "", offset, data,
                                            finish=last)
                    offset += len(data)
                    if last:
                        break

        call = self._channel.channel.stream_unary(rpc.BYTESTREAM_WRITE)
        reply = call(
            requests(),
            timeout=self._deadline(digest.size_bytes),
            metadata=self._channel.metadata,
        )
        committed = rpc.decode_write_response(reply)
        # A server that already has the blob may end the stream early and
        # report the full size; anything else is an incomplete upload.
        if committed != digest.size_bytes:
            raise RemoteError(
                f"ByteStream upload of {digest.hash[:12]} committed {committed} of "
                f"{digest.size_bytes} bytes"
            )
        return digest.size_bytes

    def _count_stream(self) -> None:
        with self._lock:
            self.streams += 1

    def _resource(self, kind: str, digest: Digest) -> str:
        name = f"{kind}/{digest.hash}/{digest.size_bytes}"
        return f"{self._instance}/{name}" if self._instance else name

    def _unary(self, method: str) -> Callable[..., bytes]:
        return self._channel.channel.unary_unary(method)  # type: ignore[no-any-return]

    def _deadline(self, size: int) -> float:
        return self._timeout + size / _SLOWEST_BYTES_PER_S


def _read_checked(src: Path, digest: Digest) -> bytes:
    with _reading(src) as handle:
        data = handle.read()
    if len(data) != digest.size_bytes or hashlib.sha256(data).hexdigest() != digest.hash:
        raise RemoteError(
            f"refusing to upload {src} as {digest.hash[:12]}: its content does not match; "
            "the local file changed or is corrupt"
        )
    return data


@contextmanager
def _reading(src: Path) -> Iterator[BinaryIO]:
    """open(src, 'rb'), with an OSError made a RemoteError: a local problem, not the server's."""
    try:
        handle = open(src, "rb")  # noqa: SIM115 - closed below
    except OSError as err:
        raise RemoteError(f"cannot read {src} for upload: {err.strerror or err}") from err
    with handle:
        yield handle
