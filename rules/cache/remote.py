"""Remote cache over Bazel's HTTP protocol: GET, HEAD and PUT of `/ac/<key>`, `/cas/<sha256>`.

Any server that speaks it works: bazel-remote, or nginx with WebDAV PUT. The
client is read-only unless `RemoteConfig.upload` is set (only CI should write
to a shared cache). Every download is re-hashed while it streams, and every
failure surfaces as a `RemoteError` so that callers can warn and build locally.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

from rules.cache.http_errors import status_error
from rules.cache.remote_config import RemoteConfig, RemoteError, has_header
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
from rules.core.fsio import CHUNK
from rules.core.hashing import sha256_file

if TYPE_CHECKING:
    from urllib3.response import BaseHTTPResponse

    from rules.cache.http_pool import Transport

# AC entries are small ActionResult messages read into memory; anything this
# large is not one, and must not be allowed to exhaust memory.
MAX_AC_BYTES = 16 << 20
# Error bodies are drained (to keep the connection) but never shown or kept.
_MAX_ERROR_BODY = 64 << 10

_HEX64 = re.compile(r"[0-9a-f]{64}")


class RemoteCache(RemoteClient):
    """Client for one remote cache, shared by all threads of a build.

    Circuit breaker: the first `RemoteUnavailable` (refused, timed out, 5xx),
    or `RemoteAuthError` on a read, marks the cache unhealthy, and every later
    call in this process raises the same error type at once, without touching
    the network. A build whose cache went away thus pays one timeout, not one
    per target. `healthy` tells callers whether to bother; make a new
    RemoteCache to try again.
    """

    def __init__(self, config: RemoteConfig) -> None:
        super().__init__(config)
        split = urlsplit(config.url)
        assert split.hostname is not None  # RemoteConfig validated it
        self._split = split
        self._transport_lock = threading.Lock()
        self._transport_: Transport | None = None
        self._headers = {
            "User-Agent": "rules_keras",
            # Bodies are hashed as received; a transparent gzip would break that.
            "Accept-Encoding": "identity",
            **config.headers,
        }
        self._sends_credentials = has_header(config.headers, "Authorization")

    def close(self) -> None:
        if self._transport_ is not None:
            self._transport_.close()

    # -- action cache ---------------------------------------------------

    def get_ac(self, key: str) -> bytes | None:
        """The AC entry under `key`, or None on a miss (404)."""
        path = self._path("ac", key)
        with self._exchange("GET", path) as response:
            if response.status == 404:
                return None
            if response.status != 200:
                self._fail(response, "GET", path)
            length = response.headers.get("Content-Length", "").strip()
            if length.isdigit() and int(length) > MAX_AC_BYTES:
                raise RemoteCorrupt(
                    f"{self._url(path)}: AC entry of {length} bytes exceeds {MAX_AC_BYTES}")
            body = response.read(MAX_AC_BYTES + 1)
            if len(body) > MAX_AC_BYTES:
                raise RemoteCorrupt(f"{self._url(path)}: AC entry exceeds {MAX_AC_BYTES} bytes")
            return body

    def put_ac(self, key: str, body: bytes) -> None:
        """Store `body` under `key`; requires `config.upload`."""
        self._put(self._path("ac", key), body, len(body))

    # -- content-addressed storage ---------------------------------------

    def has_blob(self, sha256: str) -> bool:
        """Whether the server has the blob (HEAD)."""
        if sha256 == EMPTY_SHA256:
            return True
        path = self._path("cas", sha256)
        with self._exchange("HEAD", path) as response:
            if response.status == 404:
                return False
            if response.status != 200:
                self._fail(response, "HEAD", path)
            return True

    def get_blob(self, sha256: str, size: int, dest: Path) -> bool:
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
        url = self._url(path)
        if sha256 == EMPTY_SHA256 and size == 0:
            # Bazel never asks the server for the empty blob, and some servers
            # do not store it; it needs no network anyway.
            store_blob(dest, (), sha256, 0, url)
            return True
        if size > self.config.max_blob_size:
            raise RemoteCorrupt(
                f"{url}: the entry claims a blob of {size} bytes, above remote_max_blob_size "
                f"({self.config.max_blob_size}); refused before downloading it"
            )
        with self._exchange("GET", path, size=size) as response:
            if response.status == 404:
                return False
            if response.status != 200:
                self._fail(response, "GET", path)
            length = response.headers.get("Content-Length")
            if length is not None and length.strip() != str(size):
                raise RemoteCorrupt(
                    f"{url}: server sent {length} bytes, expected {size}; "
                    "the entry on the server is truncated or corrupt"
                )
            received = 0

            def chunks() -> Iterator[bytes]:
                nonlocal received
                try:
                    while chunk := response.read(CHUNK):
                        received += len(chunk)
                        yield chunk
                except Exception as exc:
                    from rules.cache.http_pool import describe_failure

                    failure = describe_failure(exc, self.config.timeout)
                    if failure is not None and failure[0]:
                        raise RemoteCorrupt(
                            f"{url}: body truncated at {received} of {size} bytes") from exc
                    raise

            store_blob(dest, chunks(), sha256, size, url)
            return True

    def put_blob(self, sha256: str, src: Path) -> bool:
        """Upload `src` as blob `sha256` unless the server has it; True if it was sent.

        `src` is hashed first, because a wrong blob under a CAS key would be
        served to every reader; the upload then streams it with a
        Content-Length. Requires `config.upload`.
        """
        return self._upload(sha256, src) is not None

    def get_blobs(
        self, digests: Iterable[BlobDigest], dest_dir: Path | Callable[[str], Path]
    ) -> DownloadReport:
        """Download blobs to `dest_dir/<sha256>` with up to `config.parallel` at once.

        `dest_dir` may instead map a sha256 to its destination, e.g. the local
        cache's sharded `cas/` path.

        Missing blobs are reported, not raised. The first RemoteError stops
        the transfers not yet started and is raised once running ones finish;
        blobs already written stay, as each one was verified.
        """
        unique = {d.hash: d.size_bytes for d in digests}

        def fetch(sha256: str) -> tuple[str, bool, int]:
            dest = dest_dir(sha256) if callable(dest_dir) else dest_dir / sha256
            return sha256, self.get_blob(sha256, unique[sha256], dest), unique[sha256]

        fetched: list[str] = []
        missing: list[str] = []
        total = 0
        for sha256, found, size in self._parallel(fetch, unique):
            if found:
                fetched.append(sha256)
                total += size
            else:
                missing.append(sha256)
        return DownloadReport(tuple(sorted(fetched)), tuple(sorted(missing)), total)

    def put_blobs(self, files: Mapping[str, Path]) -> UploadReport:
        """Upload `{sha256: path}` with up to `config.parallel` at once; see put_blob."""
        self._require_upload()

        def send(sha256: str) -> tuple[str, bool, int]:
            size = self._upload(sha256, files[sha256])
            return sha256, size is not None, size or 0

        uploaded: list[str] = []
        present: list[str] = []
        total = 0
        for sha256, sent, size in self._parallel(send, files):
            (uploaded if sent else present).append(sha256)
            total += size
        return UploadReport(tuple(sorted(uploaded)), tuple(sorted(present)), total)

    # -- plumbing ---------------------------------------------------------

    def _parallel(
        self, work: Callable[[str], tuple[str, bool, int]], keys: Iterable[str]
    ) -> list[tuple[str, bool, int]]:
        jobs = [partial(work, key) for key in keys]
        return run_parallel(jobs, self.config.parallel, "remote-cache")

    def _upload(self, sha256: str, src: Path) -> int | None:
        """put_blob's work; the size sent, or None when the server already had it."""
        self._require_upload()
        try:
            size = src.stat().st_size
            actual = sha256_file(src) if sha256 != EMPTY_SHA256 or size else EMPTY_SHA256
        except OSError as exc:
            raise RemoteError(f"cannot read {src} for upload: {exc.strerror or exc}") from exc
        if actual != sha256:
            raise RemoteError(
                f"refusing to upload {src} as {sha256}: its content hashes to {actual}; "
                "the local file changed or is corrupt"
            )
        if self.has_blob(sha256):
            return None
        try:
            handle = open(src, "rb")  # noqa: SIM115 - closed below, after the upload
        except OSError as exc:
            raise RemoteError(f"cannot read {src} for upload: {exc.strerror or exc}") from exc
        with handle:
            self._put(self._path("cas", sha256), handle, size)
        return size

    def _path(self, kind: str, key: str) -> str:
        if not isinstance(key, str) or not _HEX64.fullmatch(key):
            raise ValueError(
                f"{kind} keys must be 64 lowercase hex characters (sha256). Received: {key!r}"
            )
        return f"{self._split.path}/{kind}/{key}"

    def _url(self, path: str) -> str:
        return f"{self._split.scheme}://{self._split.netloc}{path}"

    def _put(self, path: str, body: bytes | IO[bytes], size: int) -> None:
        self._require_upload()
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with self._exchange("PUT", path, headers, body, size=size) as response:
            if response.status not in (200, 201, 204):
                self._fail(response, "PUT", path)

    def _transport(self) -> Transport:
        # urllib3 is imported on the first request: a no-op build never pays for it.
        with self._transport_lock:
            if self._transport_ is None:
                from rules.cache.http_pool import Transport

                assert self._split.hostname is not None
                self._transport_ = Transport(
                    self._split.scheme, self._split.hostname, self._split.port,
                    timeout=self.config.timeout,
                    # One idle connection per transfer thread plus one for the
                    # caller's own thread (AC lookups), so bursts reuse sockets.
                    max_idle=self.config.parallel + 1,
                )
            return self._transport_

    @contextmanager
    def _exchange(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | IO[bytes] | None = None,
        *,
        size: int = 0,
    ) -> Iterator[BaseHTTPResponse]:
        """One request moving `size` bytes (its deadline grows with it), with
        transport errors mapped to RemoteError. Unread bodies of up to 64 KiB are
        drained afterwards, so that the connection serves the next request."""
        down = self._down
        if down is not None:
            raise type(down)(f"skipped {method} {self._url(path)}; earlier in this build: {down}")
        try:
            with self._transport().request(
                method, path, {**self._headers, **(headers or {})}, body, size
            ) as response:
                yield response
                response.read(_MAX_ERROR_BODY)
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
        except Exception as exc:
            from rules.cache.http_pool import describe_failure

            failure = describe_failure(exc, self.config.timeout)
            if failure is None:
                raise
            truncated, what = failure
            if truncated:
                raise RemoteCorrupt(f"{method} {self._url(path)}: {what}") from exc
            error = RemoteUnavailable(f"remote cache {method} {self._url(path)} failed: {what}")
            self._trip(error)
            raise error from exc

    def _fail(self, response: BaseHTTPResponse, method: str, path: str) -> NoReturn:
        response.read(_MAX_ERROR_BODY)  # so that the connection serves the next request
        raise status_error(response.status, response.reason, method, self._url(path),
                           sends_credentials=self._sends_credentials)
