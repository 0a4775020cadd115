"""What the HTTP and gRPC remotes share: error kinds, transfer reports, verified writes, fan-out."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from rules.cache.remote_config import RemoteError
from rules.core.fsio import DigestMismatch, verified, write_atomic

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_T = TypeVar("_T")


class RemoteUnavailable(RemoteError):
    """The server could not be reached, timed out, or answered 5xx."""


class RemoteAuthError(RemoteError):
    """The server rejected the request's credentials (HTTP 401 or 403)."""


class RemoteCorrupt(RemoteError):
    """A downloaded entry has the wrong size or hash, or its body was cut short."""


class BlobDigest(Protocol):
    """Anything with a sha256 `hash` and a `size_bytes`, like `rules.cache.reapi.Digest`."""

    @property
    def hash(self) -> str: ...

    @property
    def size_bytes(self) -> int: ...


@dataclass(frozen=True)
class DownloadReport:
    """What get_blobs did: blobs written to the destination, and blobs the server lacks."""

    fetched: tuple[str, ...]
    missing: tuple[str, ...]
    bytes: int


@dataclass(frozen=True)
class UploadReport:
    """What put_blobs did: blobs sent, and blobs the server already had."""

    uploaded: tuple[str, ...]
    present: tuple[str, ...]
    bytes: int


def store_blob(dest: Path, chunks: Iterable[bytes], sha256: str, size: int, what: str) -> None:
    """Write `chunks` to `dest` only if they are exactly `size` bytes hashing to `sha256`.

    They stream into a temp file beside `dest` (rules.core.fsio), which only
    a verified blob replaces. Errors raised by `chunks` pass through for the
    caller to map; a mismatch is RemoteCorrupt, and a local I/O error a plain
    RemoteError: a full disk must not trip the remote's circuit breaker.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The data is fsynced before the rename; the folder is not: a rename
        # lost in a crash only turns into a cache miss.
        write_atomic(dest, verified(chunks, sha256, size, what), sync_dir=False)
    except DigestMismatch as err:
        raise RemoteCorrupt(f"{err}; the entry on the server is corrupt") from None
    except OSError as err:
        raise RemoteError(f"cannot write {dest}: {err.strerror or err}") from err


def run_parallel(work: Sequence[Callable[[], _T]], workers: int, name: str) -> list[_T]:
    """Results of `work`, up to `workers` at a time; the first error stops the jobs not started."""
    if workers == 1 or len(work) <= 1:
        return [job() for job in work]
    with ThreadPoolExecutor(max_workers=min(workers, len(work)), thread_name_prefix=name) as pool:
        futures: list[Future[_T]] = [pool.submit(job) for job in work]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
    # Raise the error that stopped the batch, not a later fail-fast "skipped"
    # one from a thread that ran after the breaker tripped.
    for future in [*done, *futures]:
        if not future.cancelled() and (error := future.exception()) is not None:
            raise error
    return [future.result() for future in futures]
