"""What the HTTP and gRPC remotes share: error kinds, transfer reports, verified writes, fan-out."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, TypeVar

from rules.cache.remote_config import ENV_UPLOAD, RemoteConfig, RemoteError
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


class RemoteClient:
    """What both remote clients share: the config, the circuit breaker, the read-only guard.

    The breaker holds the error that made the server no use to this build;
    once set, every call raises its type at once, without touching the network.
    """

    def __init__(self, config: RemoteConfig) -> None:
        self.config = config
        self._down: RemoteError | None = None
        self._down_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.url!r}, healthy={self.healthy})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release connections; the client may not be used afterwards."""

    @property
    def healthy(self) -> bool:
        """False once the server was unavailable or refused a read; later calls fail fast."""
        return self._down is None

    def _trip(self, error: RemoteError) -> None:
        with self._down_lock:
            if self._down is None:
                self._down = error

    def _require_upload(self) -> None:
        # The one guard every upload passes: a read-only client must not even
        # try, since a shared cache must only ever be written by trusted CI.
        if not self.config.upload:
            raise RemoteError(
                f"upload to {self.config.url} is disabled (read-only client); "
                f"set remote_upload = true or {ENV_UPLOAD}=1 on CI to write to the cache"
            )


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
