"""Keep-alive HTTP(S) connections shared by the remote cache's transfer threads."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Socket reads and file sends move this much at a time; large enough that a
# 1 GiB blob is ~1000 system calls, small enough to never matter for memory.
BLOCK_SIZE = 1 << 20


class DeadlineExceeded(TimeoutError):
    """A request ran past its total deadline; its connection was cut."""


@dataclass(frozen=True)
class PoolStats:
    """Counters since the pool was created; `reused` counts requests on a kept-alive socket."""

    connections_opened: int
    requests: int
    reused: int
    stale_retries: int


class _CountingReader:
    """File wrapper that reports each chunk http.client reads, so uploads can show progress."""

    def __init__(self, handle: BinaryIO, on_read: Callable[[int], None]) -> None:
        self._handle = handle
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        if data:
            self._on_read(len(data))
        return data


class ConnectionPool:
    """A LIFO stack of idle connections to one host; each request borrows one.

    Threads never share a connection while a request is in flight, and a
    connection goes back to the stack only after its response was read to the
    end, so the next request on it starts on a clean stream.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        *,
        timeout: float,
        max_idle: int,
    ) -> None:
        self._scheme = scheme
        self._host = host
        self._port = port
        self._timeout = timeout
        self._max_idle = max_idle
        self._ssl_context = ssl.create_default_context() if scheme == "https" else None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._opened = 0
        self._requests = 0
        self._reused = 0
        self._stale_retries = 0

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(self._opened, self._requests, self._reused, self._stale_retries)

    def close(self) -> None:
        """Close the idle connections; ones still borrowed are closed when given back."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._max_idle = 0
        for conn in idle:
            conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._ssl_context is not None:
            conn = http.client.HTTPSConnection(
                self._host,
                self._port,
                timeout=self._timeout,
                context=self._ssl_context,
                blocksize=BLOCK_SIZE,
            )
        else:
            conn = http.client.HTTPConnection(
                self._host, self._port, timeout=self._timeout, blocksize=BLOCK_SIZE
            )
        # Connect eagerly: http.client would otherwise reconnect on its own
        # inside request(), and the pool could no longer count connections.
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._opened += 1
        return conn

    def _acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | Path | None,
        on_sent: Callable[[int], None] | None,
    ) -> http.client.HTTPResponse:
        if isinstance(body, Path):
            with open(body, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                all_headers = {**headers, "Content-Length": str(size)}
                if size <= BLOCK_SIZE:
                    # One send() for headers and body; small blobs are the
                    # common case and this halves their packets.
                    data = handle.read()
                    conn.request(method, path, body=data, headers=all_headers)
                    if on_sent is not None:
                        on_sent(len(data))
                else:
                    reader = handle if on_sent is None else _CountingReader(handle, on_sent)
                    conn.request(method, path, body=reader, headers=all_headers)
        else:
            conn.request(method, path, body=body, headers=dict(headers))
        with self._lock:
            self._requests += 1
        return conn.getresponse()

    @contextmanager
    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | Path | None = None,
        on_sent: Callable[[int], None] | None = None,
        deadline: float | None = None,
    ) -> Iterator[http.client.HTTPResponse]:
        """Send one request and yield its response; the caller must read the body to the end.

        A `Path` body is streamed from disk with a Content-Length. Errors are
        http.client's and the socket's own (OSError, HTTPException): the
        caller knows what the request was for and words the message.

        `deadline` bounds the whole exchange, body included, in seconds. The
        socket timeout bounds each read only, so a server dripping a byte at a
        time would hold a build forever (issue 15 §3); past the deadline a timer
        shuts the socket down, which wakes any blocked read, and whatever error
        that caused is raised as DeadlineExceeded.
        """
        if deadline is None:
            with self._request(method, path, headers, body, on_sent) as response:
                yield response
            return
        cut = threading.Event()
        finished = False
        guard = threading.Lock()
        holder: list[http.client.HTTPConnection] = []

        def expire() -> None:
            # Under the guard: once the exchange finished, its connection may
            # already serve another request, which must not be cut.
            with guard:
                if finished:
                    return
                cut.set()
                for conn in holder:
                    sock = conn.sock
                    if sock is not None:
                        with suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(deadline, expire)
        timer.daemon = True
        timer.start()
        try:
            with self._request(method, path, headers, body, on_sent, holder, cut) as response:
                try:
                    yield response
                finally:
                    with guard:
                        finished = True
                    timer.cancel()
        except Exception as exc:
            if cut.is_set():
                raise DeadlineExceeded(f"not done within {deadline:.0f}s") from exc
            raise
        finally:
            with guard:
                finished = True
            timer.cancel()

    @contextmanager
    def _request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | Path | None,
        on_sent: Callable[[int], None] | None,
        holder: list[http.client.HTTPConnection] | None = None,
        cut: threading.Event | None = None,
    ) -> Iterator[http.client.HTTPResponse]:
        conn, reused = self._acquire()
        if holder is not None:
            holder[:] = [conn]
        try:
            response = self._send(conn, method, path, headers, body, on_sent)
        except (ConnectionError, http.client.RemoteDisconnected):
            conn.close()
            if not reused:
                raise
            # The server closed this idle keep-alive connection (keepalive_timeout,
            # reload, restart) and we only learn it on first use. Nothing reached
            # a handler, and GET, HEAD and PUT are idempotent, so send it again
            # once on a fresh connection.
            with self._lock:
                self._stale_retries += 1
            conn, reused = self._connect(), False
            if holder is not None:
                holder[:] = [conn]
            try:
                response = self._send(conn, method, path, headers, body, on_sent)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        if reused:
            with self._lock:
                self._reused += 1
        complete = False
        try:
            yield response
            complete = response.isclosed()
        finally:
            # http.client drops conn.sock itself when the server said
            # `Connection: close`; an unread body would desync the next request.
            # A connection cut at its deadline is shut down: never reuse it.
            if complete and conn.sock is not None and not (cut is not None and cut.is_set()):
                self._release(conn)
            else:
                conn.close()
