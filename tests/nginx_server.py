"""A real nginx serving a Bazel-style HTTP cache on loopback, for the remote-cache tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "ci"
PASSWORD = "s3cret-Pa55"

# One line per request, split on spaces. $connection and $connection_requests
# let tests count TCP connections and prove keep-alive reuse.
_LOG_FORMAT = "$request_method $uri $status $connection $connection_requests $remote_user"

_CONF = """\
{user}
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 256;
}}

http {{
    log_format cache '{log_format}';
    access_log {prefix}/access.log cache;
    # Debian's defaults point these at /var/lib/nginx, which need not exist.
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;

    server {{
        listen 127.0.0.1:{port};
        {tls_listen}

        # Read-write cache, as a CI writer sees it.
        location /cache/ {{
            alias {root}/;
            auth_basic "rules_keras cache";
            auth_basic_user_file {prefix}/htpasswd;
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            client_max_body_size 0;
        }}

        # A cache whose backend is down, as a load balancer reports it.
        location /broken/ {{
            return 503;
        }}

        # The same entries, read-only and anonymous, as developers see them.
        location /ro/ {{
            alias {root}/;
            limit_except GET {{
                deny all;
            }}
        }}
    }}
}}
"""


@dataclass(frozen=True)
class LogEntry:
    """One parsed access-log line."""

    method: str
    uri: str
    status: int
    connection: int
    connection_requests: int
    user: str


def find_nginx() -> str | None:
    """Path of the nginx binary, looking in sbin too since it is often not on a user's PATH."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NginxServer:
    """nginx in the foreground under `prefix`; `root` is the cache directory it serves.

    `url` is the authenticated read-write cache (WebDAV PUT), `ro_url` the
    anonymous read-only view of the same files, and `broken_url` answers 503.
    With `tls=True` it also listens with a self-signed certificate:
    `https_url`, trusted via `ca_file`.
    """

    def __init__(self, prefix: Path, *, tls: bool = False) -> None:
        binary = find_nginx()
        if binary is None:
            raise FileNotFoundError(
                "nginx is not installed; the remote-cache tests need a real nginx with "
                "WebDAV PUT. Run `.ci/install-nginx` (apt-get install nginx)."
            )
        self.binary = binary
        self.prefix = prefix
        self.root = prefix / "root"
        self.root.mkdir(parents=True)
        (prefix / "tmp").mkdir()
        (prefix / "htpasswd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        self.port = _free_port()
        self.tls_port = _free_port() if tls else None
        self.ca_file = self._make_certificate() if tls else None
        self._write_conf()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cache"

    @property
    def ro_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ro"

    @property
    def broken_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/broken"

    @property
    def https_url(self) -> str:
        assert self.tls_port is not None, "start the server with tls=True"
        return f"https://127.0.0.1:{self.tls_port}/cache"

    def _make_certificate(self) -> Path:
        cert, key = self.prefix / "cert.pem", self.prefix / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert

    def _write_conf(self) -> None:
        tls_listen = ""
        if self.tls_port is not None:
            tls_listen = (
                f"listen 127.0.0.1:{self.tls_port} ssl;\n"
                f"        ssl_certificate {self.prefix}/cert.pem;\n"
                f"        ssl_certificate_key {self.prefix}/key.pem;"
            )
        (self.prefix / "nginx.conf").write_text(
            _CONF.format(
                # Workers drop to `nobody` when the master runs as root, and
                # could then not write into our private temp directory.
                user="user root;" if os.geteuid() == 0 else "",
                prefix=self.prefix,
                root=self.root,
                port=self.port,
                tls_listen=tls_listen,
                log_format=_LOG_FORMAT,
            )
        )

    def start(self) -> None:
        """Start nginx and wait until it accepts connections."""
        assert self._process is None, "nginx is already running"
        log = open(self.prefix / "stderr.log", "ab")  # noqa: SIM115 - owned by the child
        self._process = subprocess.Popen(
            [self.binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
             "-e", str(self.prefix / "error.log"), "-g", "daemon off;"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"nginx exited at start:\n{self.errors()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nginx did not listen on port {self.port}:\n{self.errors()}")

    def stop(self) -> None:
        """Fast shutdown (SIGTERM): open keep-alive connections are dropped, as in an outage."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def errors(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def access_log_lines(self, expect: int | None = None) -> list[str]:
        """Access-log lines so far, waiting for `expect` of them if given.

        nginx logs a request only after sending its response, so a client can
        see the response before the line exists. With `expect`, wait until that
        many lines are there; either way, then wait until the log stops growing
        so that an unexpected extra request is seen too.
        """
        deadline = time.monotonic() + 5
        previous: list[str] | None = None
        while True:
            lines = self._read_access_log()
            if time.monotonic() > deadline:
                return lines
            if lines == previous and (expect is None or len(lines) >= expect):
                return lines
            previous = lines
            time.sleep(0.05)

    def _read_access_log(self) -> list[str]:
        path = self.prefix / "access.log"
        if not path.exists():
            return []
        return path.read_text().splitlines()

    def access_log(self, expect: int | None = None) -> list[LogEntry]:
        entries = []
        for line in self.access_log_lines(expect):
            method, uri, status, conn, conn_requests, user = line.split(" ")
            entries.append(LogEntry(method, uri, int(status), int(conn), int(conn_requests), user))
        return entries


@contextmanager
def running_nginx(prefix: Path) -> Iterator[NginxServer]:
    """A started NginxServer under `prefix`, stopped on exit.

    For a pytest fixture: without nginx this fails the test (never skips it),
    so a CI machine that lacks nginx cannot pass the remote tests vacuously.
    """
    if find_nginx() is None:
        pytest.fail(
            "nginx is not installed; the remote-cache tests need a real nginx with WebDAV "
            "PUT. Run `.ci/install-nginx` (it apt-installs Debian's `nginx` package).",
            pytrace=False,
        )
    server = NginxServer(prefix, tls=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
