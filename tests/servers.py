"""Real cache servers on loopback for the remote-cache tests: nginx (HTTP) and BuildGrid (gRPC).

Both run as child processes of the test, on free ports of 127.0.0.1, and are
stopped by pid (SIGTERM, then SIGKILL); `running_nginx`/`running_buildgrid`
fail a test, never skip it, when the server is not installed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
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

REPO = Path(__file__).resolve().parents[1]
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


def self_signed(prefix: Path, name: str) -> Path:
    """`prefix/<name>cert.pem` and `<name>key.pem` for 127.0.0.1; the cert is its own CA."""
    cert, key = prefix / f"{name}cert.pem", prefix / f"{name}key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Daemon:
    """A server process run from `prefix`: started, awaited on `port`, stopped by pid."""

    name = "server"
    prefix: Path
    port: int

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start the server and wait until it accepts connections on `port`."""
        assert self._process is None, f"{self.name} is already running"
        log = open(self.prefix / "stderr.log", "ab")  # noqa: SIM115 - owned by the child
        self._process = subprocess.Popen(
            self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.prefix
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"{self.name} exited at start:\n{self.errors()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on port {self.port}:\n{self.errors()}")

    def stop(self) -> None:
        """SIGTERM (open connections are dropped, as in an outage), SIGKILL after 10 s."""
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
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

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


@contextmanager
def _running(server: _Daemon) -> Iterator[_Daemon]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


class NginxServer(_Daemon):
    """nginx in the foreground under `prefix`; `root` is the cache directory it serves.

    `url` is the authenticated read-write cache (WebDAV PUT), `ro_url` the
    anonymous read-only view of the same files, and `broken_url` answers 503.
    With `tls=True` it also listens with a self-signed certificate:
    `https_url`, trusted via `ca_file`.
    """

    name = "nginx"

    def __init__(self, prefix: Path, *, tls: bool = False) -> None:
        super().__init__()
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
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.ca_file = self._make_certificate() if tls else None
        self._write_conf()

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
        return self_signed(self.prefix, "")

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

    def command(self) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                "-e", str(self.prefix / "error.log"), "-g", "daemon off;"]

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
    with _running(NginxServer(prefix, tls=True)) as server:
        assert isinstance(server, NginxServer)
        yield server


# -- BuildGrid: a real REAPI server (CAS, ByteStream, ActionCache) ----------

INSTANCE = "main"
JWT_SECRET = "rules-keras-test-secret"

_BGD_CONF = """\
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
{tls_channel}
authorization:
{authorization}
storages:
  - !disk-storage &main-storage
    path: {root}
caches:
  - !lru-action-cache &main-action
    storage: *main-storage
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: true
instances:
  - name: {instance}
    services:
      - !action-cache
        cache: *main-action
      - !cas
        storage: *main-storage
      - !bytestream
        storage: *main-storage
"""

_TLS_CHANNEL = """\
  - !channel
    address: "127.0.0.1:{tls_port}"
    insecure-mode: false
    credentials:
      tls-server-key: {prefix}/key.pem
      tls-server-cert: {prefix}/cert.pem
      tls-client-certs: {prefix}/clientcert.pem
"""


def find_bgd() -> str | None:
    """BuildGrid's `bgd`: in .venv-buildgrid (made by .ci/install-buildgrid), or on PATH."""
    local = REPO / ".venv-buildgrid" / "bin" / "bgd"
    if os.access(local, os.X_OK):
        return str(local)
    return shutil.which("bgd")


class BuildGridServer(_Daemon):
    """`bgd server start` with disk CAS, ByteStream and an updatable LRU action cache.

    `url` is grpc:// on loopback, instance INSTANCE. With `tls=True` it also
    serves `grpcs_url`, which requires a client certificate (mTLS): trust the
    server with `ca_file`, present `client_cert`/`client_key`. With `auth=True`
    every call needs `authorization: Bearer <token()>` (BuildGrid's JWT, HS256).
    """

    name = "BuildGrid"

    def __init__(self, prefix: Path, *, tls: bool = False, auth: bool = False) -> None:
        super().__init__()
        binary = find_bgd()
        if binary is None:
            raise FileNotFoundError(_NO_BGD)
        self.binary = binary
        self.prefix = prefix
        self.root = prefix / "cas"
        self.root.mkdir(parents=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.ca_file = self_signed(prefix, "") if tls else None
        self.client_cert = self_signed(prefix, "client") if tls else None
        self.client_key = prefix / "clientkey.pem" if tls else None
        authorization = "  method: none"
        if auth:
            (prefix / "jwt.secret").write_text(JWT_SECRET)
            authorization = (f"  method: jwt\n  algorithm: hs256\n"
                             f"  secret: {prefix}/jwt.secret")
        tls_channel = _TLS_CHANNEL.format(tls_port=self.tls_port, prefix=prefix) if tls else ""
        (prefix / "config.yml").write_text(_BGD_CONF.format(
            port=self.port, tls_channel=tls_channel, authorization=authorization,
            root=self.root, instance=INSTANCE,
        ))

    def command(self) -> list[str]:
        return [self.binary, "server", "start", str(self.prefix / "config.yml")]

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    @property
    def grpcs_url(self) -> str:
        assert self.tls_port is not None, "start the server with tls=True"
        return f"grpcs://127.0.0.1:{self.tls_port}"

    def blob_count(self) -> int:
        """Blobs in the CAS (files of the disk storage)."""
        objects = self.root / "cas" / "objects"
        return sum(1 for path in objects.rglob("*") if path.is_file())

    def blob_path(self, sha256: str) -> Path:
        """Where the disk storage keeps a blob: cas/objects/<2 hex>/<the other 62>."""
        path = self.root / "cas" / "objects" / sha256[:2] / sha256[2:]
        assert path.is_file(), f"blob {sha256} is not in {self.root}"
        return path

    @staticmethod
    def token(lifetime: int = 3600) -> str:
        """A JWT (HS256 over JWT_SECRET) that an auth=True server accepts."""
        def part(value: object) -> str:
            raw = json.dumps(value, separators=(",", ":")).encode()
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        claims = {"sub": "ci", "exp": int(time.time()) + lifetime}
        body = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
        mac = hmac.new(JWT_SECRET.encode(), body.encode(), hashlib.sha256).digest()
        return f"{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


_NO_BGD = ("BuildGrid (bgd) is not installed; the gRPC remote-cache tests need a real REAPI "
           "server. Run `.ci/install-buildgrid` (pip-installs it into .venv-buildgrid).")


@contextmanager
def running_buildgrid(prefix: Path, *, tls: bool = False,
                      auth: bool = False) -> Iterator[BuildGridServer]:
    """A started BuildGridServer under `prefix`, stopped on exit; fails (not skips) without bgd."""
    if find_bgd() is None:
        pytest.fail(_NO_BGD, pytrace=False)
    prefix.mkdir(parents=True, exist_ok=True)
    with _running(BuildGridServer(prefix, tls=tls, auth=auth)) as server:
        assert isinstance(server, BuildGridServer)
        yield server
