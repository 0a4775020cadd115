"""urllib3's keep-alive pool for the HTTP remote, plus the total deadline urllib3 lacks.

Imported on the first request only: urllib3 (and ssl, http.client) are not
needed to decide what to build.
"""

from __future__ import annotations

import http.client
import queue
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import IO, Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError, ReadTimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from rules.core.fsio import CHUNK

# A transfer's total deadline is remote_timeout times this, plus one second per
# MIN_RATE bytes it moves: generous for any working link, and a bound on a
# server that drips one byte at a time (issue 15 §3).
DEADLINE_FACTOR = 2
MIN_RATE = 1 << 20


class DeadlineExceeded(Exception):
    """A request ran past its total deadline; its connection was cut.

    Not an OSError on purpose: urllib3 retries OSErrors, and a request past
    its deadline must not start again on a fresh connection.
    """


class _Exchange:
    """One request's claim on its connection, so that its timer cuts that socket and no other."""

    def __init__(self) -> None:
        self.conn: HTTPConnection | None = None
        self.cut = False
        self.finished = False


# Guards every claim and cut: a connection handed back to the pool may be
# claimed by another thread's request, which the old timer must then leave alone.
_CLAIMS = threading.Lock()
# id(connection) -> the exchange that sent the connection's latest request.
_OWNERS: dict[int, _Exchange] = {}
# The exchange whose request this thread is sending, for _claim.
_local = threading.local()


def _claim(conn: HTTPConnection) -> None:
    exchange: _Exchange | None = getattr(_local, "exchange", None)
    if exchange is None:
        return
    with _CLAIMS:
        if exchange.cut:
            raise DeadlineExceeded("cut at its deadline before a retry")
        exchange.conn = conn
        _OWNERS[id(conn)] = exchange


class _HTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _claim(self)
        super().request(*args, **kwargs)


class _HTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _claim(self)
        super().request(*args, **kwargs)


class _Idle(queue.LifoQueue[Any]):
    """A pool's idle connections: one put back here is no longer any request's to cut.

    urllib3 hands a connection back inside the read that ends its body, before
    the request's own cleanup runs; the claim must end first, or the timer
    could still cut the socket after another thread borrowed it.
    """

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            with _CLAIMS:
                _OWNERS.pop(id(item), None)
        super().put(item, block, timeout)


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection
    QueueCls = _Idle


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection
    QueueCls = _Idle


class _RetryStale(Retry):
    """Send once more when a kept-alive connection turns out closed; never after a timeout.

    urllib3 already drops an idle connection the server closed before reusing
    it; this covers a close racing the request. A read timeout is not retried:
    a hung server would otherwise cost two timeouts instead of one.
    """

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> _RetryStale:
        if isinstance(error, ReadTimeoutError):
            raise error
        return super().increment(method, url, response, error, _pool, _stacktrace)


class Transport:
    """Keep-alive connections to one host, shared by the remote cache's transfer threads."""

    def __init__(self, scheme: str, host: str, port: int | None, *, timeout: float,
                 max_idle: int) -> None:
        self._timeout = timeout
        options: dict[str, Any] = {
            "timeout": urllib3.Timeout(connect=timeout, read=timeout),
            "maxsize": max_idle,
            "block": False,
            "retries": _RetryStale(total=1, connect=0, read=1, redirect=0, status=0, other=0,
                                   raise_on_redirect=False, raise_on_status=False),
            # File bodies go out in fsio.CHUNK pieces, not urllib3's 16 KiB.
            "blocksize": CHUNK,
        }
        self._pool: urllib3.HTTPConnectionPool
        if scheme == "https":
            # The system's roots, and SSL_CERT_FILE, as the standard library reads them.
            self._pool = _HTTPSPool(host, port, ssl_context=ssl.create_default_context(),
                                    **options)
        else:
            self._pool = _HTTPPool(host, port, **options)

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def request(self, method: str, path: str, headers: Mapping[str, str],
                body: bytes | IO[bytes] | None, size: int) -> Iterator[BaseHTTPResponse]:
        """Send one request moving `size` bytes and yield its response, body unread.

        A deadline bounds the whole exchange, body included:
        urllib3's timeouts bound each socket read only, so a server dripping a
        byte at a time would hold a build forever (issue 15 §3). Past the
        deadline a timer shuts the socket down, which wakes any blocked read,
        and whatever error that caused is raised as DeadlineExceeded.
        A body left unread closes the connection rather than desync the next request.
        """
        deadline = self._timeout * DEADLINE_FACTOR + size / MIN_RATE
        exchange = _Exchange()
        timer = threading.Timer(deadline, _expire, (exchange,))
        timer.daemon = True
        outer, _local.exchange = getattr(_local, "exchange", None), exchange
        timer.start()
        try:
            response = self._pool.urlopen(
                method, path, body=body, headers=dict(headers), redirect=False,
                preload_content=False, decode_content=False, assert_same_host=False)
            try:
                yield response
            finally:
                if not response.closed:
                    response.close()
                response.release_conn()
        except Exception as exc:
            if exchange.cut:
                raise DeadlineExceeded(f"not done within {deadline:.0f}s") from exc
            raise
        finally:
            with _CLAIMS:
                exchange.finished = True
                if exchange.conn is not None and _OWNERS.get(id(exchange.conn)) is exchange:
                    del _OWNERS[id(exchange.conn)]
            timer.cancel()
            _local.exchange = outer


def _expire(exchange: _Exchange) -> None:
    with _CLAIMS:
        if exchange.finished:
            return
        exchange.cut = True
        conn = exchange.conn
        # Once its body was read, the connection went back to the pool and
        # may serve another request by now: cut it only while still ours.
        if conn is not None and _OWNERS.get(id(conn)) is exchange and conn.sock is not None:
            with suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)


def describe_failure(exc: BaseException, timeout: float) -> tuple[bool, str] | None:
    """(truncated, what went wrong) for a transport error; None for any other exception.

    `truncated` means the body ended before its Content-Length: the entry, not
    the server, is suspect.
    """
    if isinstance(exc, DeadlineExceeded):
        return False, (f"the transfer was {exc}, its deadline ({DEADLINE_FACTOR} x "
                       "remote_timeout plus 1 s per MiB); the server is too slow or stalling")
    if not isinstance(exc, urllib3.exceptions.HTTPError | OSError | http.client.HTTPException):
        return None
    chain = _causes(exc)

    def find(kind: type[BaseException] | tuple[type[BaseException], ...]) -> Any:
        return next((e for e in chain if isinstance(e, kind)), None)

    if find(http.client.IncompleteRead) is not None:
        return True, "body truncated: the server sent less than its Content-Length"
    if (cert := find(ssl.SSLCertVerificationError)) is not None:
        return False, (f"TLS error: {cert.verify_message or cert.reason}; if the server uses a "
                       "private CA, point SSL_CERT_FILE at its certificate bundle")
    if (tls := find(ssl.SSLError)) is not None:
        return False, f"TLS error: {tls.reason or tls}"
    if find(ConnectionRefusedError) is not None:
        return False, "connection refused; is the cache server running?"
    if (dns := find(socket.gaierror)) is not None:
        return False, f"cannot resolve the host: {dns.strerror}"
    if find((TimeoutError, urllib3.exceptions.TimeoutError)) is not None:
        return False, f"no answer within {timeout:g}s (remote_timeout)"
    if (os_error := find(OSError)) is not None and os_error.strerror:
        return False, str(os_error.strerror)
    root = chain[-1]
    return False, f"{type(root).__name__}: {root}"


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps: urllib3 keeps the socket's error in `reason`, `args`, causes."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        error = todo.pop(0)
        if any(error is s for s in seen):
            continue
        seen.append(error)
        if isinstance(error, MaxRetryError) and error.reason is not None:
            todo.append(error.reason)
        todo += [arg for arg in error.args if isinstance(arg, BaseException)]
        todo += [e for e in (error.__cause__, error.__context__) if e is not None]
    return seen
