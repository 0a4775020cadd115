"""Remote cache over Bazel's HTTP protocol: GET, HEAD and PUT of `/ac/<key>`, `/cas/<sha256>`.

Any server that speaks it works: bazel-remote, or nginx with WebDAV PUT. The
client is read-only unless `RemoteConfig.upload` is set (only CI should write
to a shared cache). Every download is re-hashed while it streams, and every
failure surfaces as a `RemoteError` so that callers can warn and build locally.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn, Protocol
from urllib.parse import urlsplit

from rules.cache.http_pool import BLOCK_SIZE, ConnectionPool, DeadlineExceeded, PoolStats
from rules.cache.remote_config import (
    CREDENTIALS_HINT,
    ENV_PASSWORD,
    ENV_UPLOAD,
    ENV_USER,
    RemoteConfig,
    RemoteError,
    has_header,
)
from rules.core.hashing import sha256_file

# Blobs above this size report progress each time this many more bytes moved.
PROGRESS_STEP = 64 << 20
# AC entries are small ActionResult messages read into memory; anything this
# large is not one, and must not be allowed to exhaust memory.
MAX_AC_BYTES = 16 << 20
# A transfer's total deadline is remote_timeout times this, plus one second per
# MIN_RATE bytes it moves: generous for any working link, and a bound on a
# server that drips one byte at a time (issue 15 §3).
DEADLINE_FACTOR = 2
MIN_RATE = 1 << 20
# Error bodies are drained (to keep the connection) but never shown or kept.
_MAX_ERROR_BODY = 64 << 10

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_HEX64 = re.compile(r"[0-9a-f]{64}")


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
class TransferProgress:
    """Progress of one large blob; sent every PROGRESS_STEP bytes and when it completes."""

    direction: Literal["download", "upload"]
    sha256: str
    done_bytes: int
    total_bytes: int


ProgressCallback = Callable[[TransferProgress], None]


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


class RemoteCache:
    """Client for one remote cache, shared by all threads of a build.

    Circuit breaker: the first `RemoteUnavailable` (refused, timed out, 5xx),
    or `RemoteAuthError` on a read, marks the cache unhealthy, and every later
    call in this process raises the same error type at once, without touching
    the network. A build whose cache went away thus pays one timeout, not one
    per target. `healthy` tells callers whether to bother; make a new
    RemoteCache to try again.
    """

    def __init__(self, config: RemoteConfig) -> None:
        self.config = config
        split = urlsplit(config.url)
        assert split.hostname is not None  # RemoteConfig validated it
        self._base_path = split.path
        self._pool = ConnectionPool(
            split.scheme,
            split.hostname,
            split.port,
            timeout=config.timeout,
            # Keep one idle connection per transfer thread plus one for the
            # caller's own thread (AC lookups), so bursts reuse sockets.
            max_idle=config.parallel + 1,
        )
        self._headers = {
            "User-Agent": "rules_keras",
            # Bodies are hashed as received; a transparent gzip would break that.
            "Accept-Encoding": "identity",
            **config.headers,
        }
        self._sends_credentials = has_header(config.headers, "Authorization")
        self._down: RemoteUnavailable | RemoteAuthError | None = None
        self._down_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteCache({self.config.url!r}, healthy={self.healthy})"

    def __enter__(self) -> RemoteCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.close()

    @property
    def healthy(self) -> bool:
        """False once the server was unavailable or refused a read; later calls fail fast."""
        return self._down is None

    def stats(self) -> PoolStats:
        """Connection and request counters, e.g. to check that keep-alive works."""
        return self._pool.stats()

    # -- action cache ---------------------------------------------------

    def get_ac(self, key: str) -> bytes | None:
        """The AC entry under `key`, or None on a miss (404)."""
        path = self._path("ac", key)
        with self._exchange("GET", path, size=0) as response:
            if response.status == 404:
                _drain(response)
                return None
            if response.status != 200:
                self._fail(response, "GET", path)
            body = _read_limited(response, MAX_AC_BYTES, self._url(path))
            _drain(response)
            return body

    def put_ac(self, key: str, body: bytes) -> None:
        """Store `body` under `key`; requires `config.upload`."""
        self._put(self._path("ac", key), body)

    # -- content-addressed storage ---------------------------------------

    def has_blob(self, sha256: str) -> bool:
        """Whether the server has the blob (HEAD)."""
        if sha256 == _EMPTY_SHA256:
            return True
        path = self._path("cas", sha256)
        with self._exchange("HEAD", path, size=0) as response:
            _drain(response)
            if response.status == 404:
                return False
            if response.status != 200:
                self._fail(response, "HEAD", path)
            return True

    def get_blob(
        self,
        sha256: str,
        size: int,
        dest: Path,
        progress: ProgressCallback | None = None,
    ) -> bool:
        """Download a blob to `dest`; False if the server does not have it (404).

        The body streams through a 1 MiB buffer into a temporary file next to
        `dest`, so memory use does not depend on the blob size. Its size and
        sha256 are checked while it streams; only a verified file is fsynced
        and renamed onto `dest`, so `dest` never holds a partial or wrong blob.
        A mismatch raises RemoteCorrupt.
        """
        path = self._path("cas", sha256)
        if size < 0:
            raise ValueError(f"blob size must be >= 0. Received: size={size}")
        if sha256 == _EMPTY_SHA256 and size == 0:
            # Bazel never asks the server for the empty blob, and some servers
            # do not store it; it needs no network anyway.
            _write_verified(dest, iter(()))
            return True
        url = self._url(path)
        if size > self.config.max_blob_size:
            raise RemoteCorrupt(
                f"{url}: the entry claims a blob of {size} bytes, above remote_max_blob_size "
                f"({self.config.max_blob_size}); refused before downloading it"
            )
        with self._exchange("GET", path, size=size) as response:
            if response.status == 404:
                _drain(response)
                return False
            if response.status != 200:
                self._fail(response, "GET", path)
            length = response.getheader("Content-Length")
            if length is not None and length.strip() != str(size):
                raise RemoteCorrupt(
                    f"{url}: server sent {length} bytes, expected {size}; "
                    "the entry on the server is truncated or corrupt"
                )
            report = _Reporter("download", sha256, size, progress)
            digest = hashlib.sha256()
            received = 0

            def chunks() -> Iterator[memoryview]:
                nonlocal received
                buffer = memoryview(bytearray(min(BLOCK_SIZE, size + 1)))
                while n := response.readinto(buffer):
                    received += n
                    if received > size:
                        raise RemoteCorrupt(f"{url}: server sent more than {size} bytes")
                    digest.update(buffer[:n])
                    report.advance(n)
                    yield buffer[:n]
                if received < size:
                    raise RemoteCorrupt(f"{url}: body truncated at {received} of {size} bytes")
                actual = digest.hexdigest()
                if actual != sha256:
                    raise RemoteCorrupt(
                        f"{url}: content hashes to {actual}; the entry on the server is corrupt"
                    )

            _write_verified(dest, chunks())
            return True

    def put_blob(self, sha256: str, src: Path, progress: ProgressCallback | None = None) -> bool:
        """Upload `src` as blob `sha256` unless the server has it; True if it was sent.

        `src` is hashed first, because a wrong blob under a CAS key would be
        served to every reader; the upload then streams it with a
        Content-Length. Requires `config.upload`.
        """
        return self._upload(sha256, src, progress) is not None

    def get_blobs(
        self,
        digests: Iterable[BlobDigest],
        dest_dir: Path | Callable[[str], Path],
        progress: ProgressCallback | None = None,
    ) -> DownloadReport:
        """Download blobs to `dest_dir/<sha256>` with up to `config.parallel` at once.

        `dest_dir` may instead map a sha256 to its destination, e.g. the local
        cache's sharded `cas/` path.

        Missing blobs are reported, not raised. The first RemoteError stops
        the transfers not yet started and is raised once running ones finish;
        blobs already written stay, as each one was verified. `progress` is
        called from the transfer threads.
        """
        unique = {d.hash: d.size_bytes for d in digests}

        def fetch(sha256: str) -> tuple[str, bool, int]:
            size = unique[sha256]
            dest = dest_dir(sha256) if callable(dest_dir) else dest_dir / sha256
            return sha256, self.get_blob(sha256, size, dest, progress), size

        fetched: list[str] = []
        missing: list[str] = []
        total = 0
        for sha256, found, size in self._run_parallel(fetch, list(unique)):
            if found:
                fetched.append(sha256)
                total += size
            else:
                missing.append(sha256)
        return DownloadReport(tuple(sorted(fetched)), tuple(sorted(missing)), total)

    def put_blobs(
        self, files: Mapping[str, Path], progress: ProgressCallback | None = None
    ) -> UploadReport:
        """Upload `{sha256: path}` with up to `config.parallel` at once; see put_blob."""
        self._require_upload()

        def send(sha256: str) -> tuple[str, bool, int]:
            size = self._upload(sha256, files[sha256], progress)
            return sha256, size is not None, size or 0

        uploaded: list[str] = []
        present: list[str] = []
        total = 0
        for sha256, sent, size in self._run_parallel(send, list(files)):
            (uploaded if sent else present).append(sha256)
            total += size
        return UploadReport(tuple(sorted(uploaded)), tuple(sorted(present)), total)

    # -- plumbing ---------------------------------------------------------

    def _run_parallel(
        self, work: Callable[[str], tuple[str, bool, int]], keys: list[str]
    ) -> list[tuple[str, bool, int]]:
        if self.config.parallel == 1 or len(keys) <= 1:
            return [work(key) for key in keys]
        with ThreadPoolExecutor(
            max_workers=min(self.config.parallel, len(keys)), thread_name_prefix="remote-cache"
        ) as executor:
            futures: list[Future[tuple[str, bool, int]]] = [
                executor.submit(work, key) for key in keys
            ]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
        # Raise the error that stopped the batch, not a later fail-fast
        # "skipped" one from a thread that ran after the breaker tripped.
        for future in [*done, *futures]:
            if not future.cancelled() and (error := future.exception()) is not None:
                raise error
        return [future.result() for future in futures]

    def _upload(self, sha256: str, src: Path, progress: ProgressCallback | None) -> int | None:
        """put_blob's work; the size sent, or None when the server already had it."""
        self._require_upload()
        path = self._path("cas", sha256)
        try:
            size = src.stat().st_size
            actual = sha256_file(src) if sha256 != _EMPTY_SHA256 or size else _EMPTY_SHA256
        except OSError as exc:
            raise RemoteError(f"cannot read {src} for upload: {exc.strerror or exc}") from exc
        if actual != sha256:
            raise RemoteError(
                f"refusing to upload {src} as {sha256}: its content hashes to {actual}; "
                "the local file changed or is corrupt"
            )
        if self.has_blob(sha256):
            return None
        report = _Reporter("upload", sha256, size, progress)
        self._put(path, src, on_sent=report.advance)
        return size

    def _path(self, kind: str, key: str) -> str:
        if not isinstance(key, str) or not _HEX64.fullmatch(key):
            raise ValueError(
                f"{kind} keys must be 64 lowercase hex characters (sha256). Received: {key!r}"
            )
        return f"{self._base_path}/{kind}/{key}"

    def _url(self, path: str) -> str:
        split = urlsplit(self.config.url)
        return f"{split.scheme}://{split.netloc}{path}"

    def _require_upload(self) -> None:
        # The one guard every PUT passes: a read-only client must not even try,
        # since a shared cache must only ever be written by trusted CI.
        if not self.config.upload:
            raise RemoteError(
                f"upload to {self.config.url} is disabled (read-only client); "
                f"set remote_upload = true or {ENV_UPLOAD}=1 on CI to write to the cache"
            )

    def _put(
        self, path: str, body: bytes | Path, on_sent: Callable[[int], None] | None = None
    ) -> None:
        self._require_upload()
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(body, bytes):
            size = len(body)
        else:
            try:
                size = body.stat().st_size
            except OSError as exc:
                raise RemoteError(f"cannot read {body} for upload: {exc.strerror or exc}") from exc
        with self._exchange("PUT", path, headers, body, on_sent, size=size) as response:
            _drain(response)
            if response.status not in (200, 201, 204):
                self._fail(response, "PUT", path)

    @contextmanager
    def _exchange(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | Path | None = None,
        on_sent: Callable[[int], None] | None = None,
        *,
        size: int = 0,
    ) -> Iterator[http.client.HTTPResponse]:
        """One request moving `size` bytes through the pool, within a deadline scaled by the
        size, with transport errors mapped to RemoteError."""
        down = self._down
        if down is not None:
            raise type(down)(f"skipped {method} {self._url(path)}; earlier in this build: {down}")
        deadline = self.config.timeout * DEADLINE_FACTOR + size / MIN_RATE
        try:
            with self._pool.request(
                method, path, {**self._headers, **(headers or {})}, body, on_sent, deadline
            ) as response:
                yield response
        except RemoteUnavailable as exc:
            self._trip(exc)
            raise
        except RemoteAuthError as exc:
            # Credentials do not change within a process: a rejected read will
            # be rejected for every target. A refused upload only means these
            # credentials cannot write, so reads go on.
            if method != "PUT":
                self._trip(exc)
            raise
        except RemoteError:
            raise
        except http.client.IncompleteRead as exc:
            raise RemoteCorrupt(
                f"{method} {self._url(path)}: body truncated after {len(exc.partial)} bytes"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            error = RemoteUnavailable(
                f"remote cache {method} {self._url(path)} failed: {self._describe(exc)}"
            )
            self._trip(error)
            raise error from exc

    def _trip(self, error: RemoteUnavailable | RemoteAuthError) -> None:
        with self._down_lock:
            if self._down is None:
                self._down = error

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, DeadlineExceeded):
            return (f"the transfer was {exc}, its deadline ({DEADLINE_FACTOR} x remote_timeout "
                    "plus 1 s per MiB); the server is too slow or stalling")
        if isinstance(exc, socket.timeout | TimeoutError):
            return f"no answer within {self.config.timeout:g}s (remote_timeout)"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused; is the cache server running?"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"TLS error: {exc.verify_message or exc.reason}; if the server uses a private "
                "CA, point SSL_CERT_FILE at its certificate bundle"
            )
        if isinstance(exc, ssl.SSLError):
            return f"TLS error: {exc.reason or exc}"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve the host: {exc.strerror}"
        if isinstance(exc, OSError):
            return exc.strerror or type(exc).__name__
        return f"{type(exc).__name__}: {exc}"

    def _fail(self, response: http.client.HTTPResponse, method: str, path: str) -> NoReturn:
        """Raise the RemoteError for an unexpected status."""
        _drain(response)
        status, url = response.status, self._url(path)
        if status in (401, 403):
            if status == 401 and not self._sends_credentials:
                raise RemoteAuthError(
                    f"remote cache requires credentials (HTTP 401) for {url}; "
                    f"set {ENV_USER} and {ENV_PASSWORD}"
                )
            if method == "PUT" and status == 403:
                raise RemoteAuthError(
                    f"remote cache refused the upload (HTTP 403) to {url}: this endpoint or "
                    f"these credentials are read-only. For write access {CREDENTIALS_HINT}; "
                    "or set remote_upload = false"
                )
            raise RemoteAuthError(
                f"remote cache rejected the credentials (HTTP {status}) for {url}; "
                f"{CREDENTIALS_HINT}"
            )
        if status >= 500:
            raise RemoteUnavailable(
                f"remote cache {method} {url} failed with HTTP {status} {response.reason}"
            )
        if status == 405 and method == "PUT":
            raise RemoteError(
                f"remote cache {url} does not accept uploads (HTTP 405); enable WebDAV PUT "
                "on the server (nginx: dav_methods PUT) or set remote_upload = false"
            )
        if status == 413:
            raise RemoteError(
                f"remote cache {url} refused an upload as too large (HTTP 413); raise the "
                "server's body size limit (nginx: client_max_body_size 0)"
            )
        if 300 <= status < 400:
            raise RemoteError(
                f"remote cache {method} {url} answered a redirect (HTTP {status}), which is "
                "not followed; set remote_cache to the final URL"
            )
        raise RemoteError(
            f"remote cache {method} {url} failed with HTTP {status} {response.reason}"
        )


class _Reporter:
    """Turns byte counts into TransferProgress calls for blobs above PROGRESS_STEP."""

    def __init__(
        self,
        direction: Literal["download", "upload"],
        sha256: str,
        total: int,
        callback: ProgressCallback | None,
    ) -> None:
        self._direction = direction
        self._sha256 = sha256
        self._total = total
        self._callback = callback if total > PROGRESS_STEP else None
        self._done = 0
        self._next = PROGRESS_STEP

    def advance(self, n: int) -> None:
        if self._callback is None:
            return
        # min(): a retried upload re-reads the file from the start.
        self._done = min(self._done + n, self._total)
        if self._done >= self._next or self._done == self._total:
            while self._next <= self._done:
                self._next += PROGRESS_STEP
            self._callback(TransferProgress(self._direction, self._sha256, self._done, self._total))
            if self._done == self._total:
                self._callback = None


def _write_verified(dest: Path, chunks: Iterator[memoryview]) -> None:
    """Write `chunks` to a temp file beside `dest`, fsync, and rename it onto `dest`.

    `chunks` raises when the data turns out to be wrong; the temp file is then
    removed, so readers never see a partial or unverified blob. Errors from
    `chunks` pass through untouched (the caller maps network errors), while
    local I/O errors become RemoteError here: a failed download must not fail
    the build, and a full disk must not trip the remote's circuit breaker.
    """
    # The ".tmp-" prefix is the local cache's tmp convention: downloads land
    # straight in its cas/ shards, and gc must recognise a download abandoned
    # by a killed build so it can delete it.
    tmp = dest.with_name(f".tmp-{dest.name[:16]}.{uuid.uuid4().hex}")
    with _local_io(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle = open(tmp, "wb")  # noqa: SIM115 - closed below, after the loop
    try:
        with handle:
            for chunk in chunks:
                with _local_io(dest):
                    handle.write(chunk)
            with _local_io(dest):
                handle.flush()
                os.fsync(handle.fileno())
        with _local_io(dest):
            os.replace(tmp, dest)
    except BaseException:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _local_io(dest: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise RemoteError(f"cannot write {dest}: {exc.strerror or exc}") from exc


def _read_limited(response: http.client.HTTPResponse, limit: int, url: str) -> bytes:
    """The whole body, refusing more than `limit` bytes without reading them."""
    length = response.getheader("Content-Length")
    if length is not None and length.strip().isdigit():
        expected = int(length)
        if expected > limit:
            raise RemoteCorrupt(f"{url}: AC entry of {expected} bytes exceeds {limit}")
        body = response.read(expected)
        if len(body) != expected:
            raise RemoteCorrupt(f"{url}: body truncated at {len(body)} of {expected} bytes")
        return body
    parts: list[bytes] = []
    total = 0
    while chunk := response.read(64 << 10):
        total += len(chunk)
        if total > limit:
            raise RemoteCorrupt(f"{url}: AC entry exceeds {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _drain(response: http.client.HTTPResponse) -> None:
    """Read what is left of a small body so the connection can serve another request."""
    if not response.isclosed():
        response.read(_MAX_ERROR_BODY)
