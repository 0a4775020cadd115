"""Tests for rules.cache.remote against a real nginx speaking Bazel's HTTP cache protocol."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import PASSWORD, USER, NginxServer, running_nginx

from rules.cache.remote import RemoteAuthError, RemoteCache, RemoteCorrupt, RemoteUnavailable
from rules.cache.remote_config import (
    RemoteConfig,
    RemoteConfigError,
    RemoteError,
    remote_config_from,
)


@dataclass(frozen=True)
class Digest:
    hash: str
    size_bytes: int


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxServer]:
    with running_nginx(tmp_path / "nginx") as server:
        yield server


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _writer(server: NginxServer, *, timeout: float = 10.0, parallel: int = 4) -> RemoteCache:
    url = server.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    return RemoteCache(RemoteConfig(url, upload=True, timeout=timeout, parallel=parallel))


def _reader(server: NginxServer) -> RemoteCache:
    return RemoteCache(RemoteConfig(server.ro_url))


def _blob(tmp_path: Path, data: bytes) -> tuple[str, Path]:
    path = tmp_path / "src" / _sha(data)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return _sha(data), path


def _methods(server: NginxServer, expect: int) -> list[str]:
    return [entry.method for entry in server.access_log(expect)]


# -- protocol round trips ------------------------------------------------------


def test_ac_round_trip_and_miss(nginx: NginxServer) -> None:
    key = _sha(b"action")
    with _writer(nginx) as cache:
        assert cache.get_ac(key) is None
        cache.put_ac(key, b"\x0a\x02hi")
        assert cache.get_ac(key) == b"\x0a\x02hi"
        # Bazel's layout: the entry is a plain file at <root>/ac/<key>.
        assert (nginx.root / "ac" / key).read_bytes() == b"\x0a\x02hi"
    with _reader(nginx) as reader:
        assert reader.get_ac(key) == b"\x0a\x02hi"
    assert [(e.method, e.uri, e.status) for e in nginx.access_log(4)] == [
        ("GET", f"/cache/ac/{key}", 404),
        ("PUT", f"/cache/ac/{key}", 201),
        ("GET", f"/cache/ac/{key}", 200),
        ("GET", f"/ro/ac/{key}", 200),
    ]


def test_blob_round_trip_head_and_missing(nginx: NginxServer, tmp_path: Path) -> None:
    sha, src = _blob(tmp_path, b"weights" * 1000)
    with _writer(nginx) as cache:
        assert not cache.has_blob(sha)
        assert cache.put_blob(sha, src) is True
        assert cache.has_blob(sha)
        assert cache.put_blob(sha, src) is False, "a present blob is not sent again"
        dest = tmp_path / "out" / "blob"
        assert cache.get_blob(sha, 7000, dest) is True
        assert dest.read_bytes() == b"weights" * 1000
        absent = tmp_path / "out" / "absent"
        assert cache.get_blob(_sha(b"nope"), 4, absent) is False
        assert not absent.exists()
    assert _methods(nginx, 7) == ["HEAD", "HEAD", "PUT", "HEAD", "HEAD", "GET", "GET"]


def test_empty_blob_needs_no_request(nginx: NginxServer, tmp_path: Path) -> None:
    with _reader(nginx) as cache:
        assert cache.get_blob(_sha(b""), 0, tmp_path / "empty") is True
        assert cache.has_blob(_sha(b""))
    assert (tmp_path / "empty").read_bytes() == b""
    assert nginx.access_log_lines() == []


def test_https_with_trusted_certificate(
    nginx: NginxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = nginx.https_url.replace("https://", f"https://{USER}:{PASSWORD}@")
    with RemoteCache(RemoteConfig(url)) as untrusted, pytest.raises(RemoteUnavailable) as info:
        untrusted.get_ac(_sha(b"k"))
    assert "TLS" in str(info.value)
    monkeypatch.setenv("SSL_CERT_FILE", str(nginx.ca_file))
    with RemoteCache(RemoteConfig(url, upload=True)) as cache:
        cache.put_ac(_sha(b"k"), b"tls")
        assert cache.get_ac(_sha(b"k")) == b"tls"


# -- read-only clients and credentials ------------------------------------------


def test_read_only_client_never_sends_put(nginx: NginxServer, tmp_path: Path) -> None:
    sha, src = _blob(tmp_path, b"model")
    config = RemoteConfig(nginx.url.replace("http://", f"http://{USER}:{PASSWORD}@"))
    assert config.upload is False
    with RemoteCache(config) as cache:
        with pytest.raises(RemoteError, match="read-only client"):
            cache.put_ac(_sha(b"a"), b"x")
        with pytest.raises(RemoteError, match="read-only client"):
            cache.put_blob(sha, src)
        with pytest.raises(RemoteError, match="read-only client"):
            cache.put_blobs({sha: src})
        cache.get_ac(_sha(b"a"))
        cache.get_blobs([Digest(sha, 5)], tmp_path / "out")
    assert _methods(nginx, 2) == ["GET", "GET"]


def test_read_only_endpoint_refuses_upload(nginx: NginxServer) -> None:
    with RemoteCache(RemoteConfig(nginx.ro_url, upload=True)) as cache:
        with pytest.raises(RemoteAuthError, match=r"refused the upload \(HTTP 403\)"):
            cache.put_ac(_sha(b"a"), b"x")
        assert cache.healthy, "a refused upload says nothing about reads"
    assert not (nginx.root / "ac").exists()


def test_wrong_password_is_a_clear_auth_error(nginx: NginxServer) -> None:
    url = nginx.url.replace("http://", f"http://{USER}:hunter2-wrong@")
    with RemoteCache(RemoteConfig(url)) as cache, pytest.raises(RemoteAuthError) as info:
        cache.get_ac(_sha(b"a"))
    message = str(info.value)
    assert "rejected the credentials (HTTP 401)" in message
    assert f"{nginx.url}/ac/{_sha(b'a')}" in message
    assert "RULES_KERAS_REMOTE_USER" in message
    assert "hunter2" not in message and USER not in message
    assert "hunter2" not in repr(cache.config) and "hunter2" not in repr(cache)
    assert not cache.healthy, "credentials do not change mid-build: later reads fail fast"
    with pytest.raises(RemoteAuthError, match="earlier in this build"):
        cache.has_blob(_sha(b"b"))
    assert len(nginx.access_log_lines()) == 1, "the fail-fast call sent nothing"


def test_missing_credentials_say_what_to_set(nginx: NginxServer) -> None:
    with RemoteCache(RemoteConfig(nginx.url)) as cache, pytest.raises(RemoteAuthError) as info:
        cache.get_ac(_sha(b"a"))
    assert "requires credentials (HTTP 401)" in str(info.value)
    assert "RULES_KERAS_REMOTE_PASSWORD" in str(info.value)


# -- verification of downloads --------------------------------------------------


def test_corrupt_blob_on_server_leaves_no_file(nginx: NginxServer, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    sha, src = _blob(tmp_path, data)
    with _writer(nginx) as cache:
        cache.put_blob(sha, src)
        served = nginx.root / "cas" / sha
        flipped = bytearray(served.read_bytes())
        flipped[150_000] ^= 0x01
        served.write_bytes(bytes(flipped))
        out = tmp_path / "out"
        with pytest.raises(RemoteCorrupt, match="hashes to"):
            cache.get_blob(sha, len(data), out / sha)
        assert list(out.iterdir()) == [], "neither the blob nor a temp file is left"
        assert cache.healthy


def test_truncated_blob_on_server(nginx: NginxServer, tmp_path: Path) -> None:
    data = b"0123456789" * 100
    (nginx.root / "cas").mkdir()
    (nginx.root / "cas" / _sha(data)).write_bytes(data[:-10])
    with _reader(nginx) as cache, pytest.raises(RemoteCorrupt, match="truncated or corrupt"):
        cache.get_blob(_sha(data), len(data), tmp_path / "blob")
    assert not (tmp_path / "blob").exists()


@pytest.fixture
def short_body_server() -> Iterator[str]:
    """A raw server that promises 1000 bytes and hangs up after 100, like a dying proxy."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    thread.join(timeout=5)


def test_body_cut_short_mid_stream(short_body_server: str, tmp_path: Path) -> None:
    cache = RemoteCache(RemoteConfig(short_body_server))
    with cache, pytest.raises(RemoteCorrupt, match="truncated at 100 of 1000"):
        cache.get_blob(_sha(b"y" * 1000), 1000, tmp_path / "blob")
    assert list(tmp_path.iterdir()) == []


def test_oversized_ac_entry_is_not_read(nginx: NginxServer) -> None:
    (nginx.root / "ac").mkdir()
    with open(nginx.root / "ac" / _sha(b"big"), "wb") as handle:
        handle.truncate(17 << 20)
    with _reader(nginx) as cache, pytest.raises(RemoteCorrupt, match="exceeds"):
        cache.get_ac(_sha(b"big"))


def test_upload_refuses_a_file_that_does_not_match_its_key(
    nginx: NginxServer,
    tmp_path: Path,
) -> None:
    _, src = _blob(tmp_path, b"real content")
    with _writer(nginx) as cache, pytest.raises(RemoteError, match="refusing to upload"):
        cache.put_blob(_sha(b"claimed content"), src)
    assert nginx.access_log_lines() == []


# -- outages ----------------------------------------------------------------------


def test_stopped_server_fails_fast_then_breaker_stays_open(nginx: NginxServer) -> None:
    with _writer(nginx, timeout=5.0) as cache:
        cache.put_ac(_sha(b"a"), b"x")
        nginx.stop()
        started = time.monotonic()
        with pytest.raises(RemoteUnavailable, match="connection refused"):
            cache.get_ac(_sha(b"a"))
        assert time.monotonic() - started < 2.0
        assert not cache.healthy
        logged = len(nginx.access_log_lines())
        nginx.start()
        started = time.monotonic()
        with pytest.raises(RemoteUnavailable, match=r"earlier in this build: .*refused"):
            cache.get_ac(_sha(b"a"))
        assert time.monotonic() - started < 0.05
        assert len(nginx.access_log_lines()) == logged, "fail-fast must not touch the network"


def test_read_timeout_is_bounded(tmp_path: Path) -> None:
    # Accepted by the kernel's backlog but never answered: a hung server.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with RemoteCache(RemoteConfig(url, timeout=0.3)) as cache:
            started = time.monotonic()
            with pytest.raises(RemoteUnavailable, match=r"no answer within 0.3s"):
                cache.get_ac(_sha(b"a"))
            assert time.monotonic() - started < 2.0


def test_server_error_is_unavailable(nginx: NginxServer) -> None:
    with RemoteCache(RemoteConfig(nginx.broken_url)) as cache:
        with pytest.raises(RemoteUnavailable, match="HTTP 503"):
            cache.get_ac(_sha(b"a"))
        assert not cache.healthy


def test_restarted_server_is_retried_on_a_fresh_connection(nginx: NginxServer) -> None:
    with _writer(nginx) as cache:
        cache.put_ac(_sha(b"a"), b"x")
        nginx.stop()
        nginx.start()
        assert cache.get_ac(_sha(b"a")) == b"x"
        assert cache.healthy
    # The kept-alive connection died with the old nginx: a fresh one served the GET.
    last = nginx.access_log(2)[-1]
    assert (last.method, last.status, last.connection_requests) == ("GET", 200, 1)


# -- parallel transfers and large blobs -------------------------------------------


def test_parallel_transfers_reuse_connections(nginx: NginxServer, tmp_path: Path) -> None:
    blobs = dict(_blob(tmp_path, f"blob {i}".encode() * 50) for i in range(200))
    with _writer(nginx, parallel=4) as cache:
        report = cache.put_blobs(blobs)
        assert len(report.uploaded) == 200 and report.present == ()
        out = tmp_path / "out"
        digests = [Digest(sha, path.stat().st_size) for sha, path in blobs.items()]
        fetched = cache.get_blobs([*digests, Digest(_sha(b"gone"), 4)], out)
        assert fetched.fetched == tuple(sorted(blobs)) and fetched.missing == (_sha(b"gone"),)
        for sha in blobs:
            assert hashlib.sha256((out / sha).read_bytes()).hexdigest() == sha
        again = cache.put_blobs(blobs)
        assert again.uploaded == () and len(again.present) == 200
    log = nginx.access_log(200 * 2 + 201 + 200)
    assert len(log) == 200 * 2 + 201 + 200
    connections = {entry.connection for entry in log}
    # 801 requests over at most one connection per worker thread (plus the
    # caller's), instead of one each.
    assert len(connections) <= 5, connections
    assert max(entry.connection_requests for entry in log) > 100


def test_large_blob_streams_in_bounded_memory(nginx: NginxServer, tmp_path: Path) -> None:
    size = 80 << 20
    src = tmp_path / "big"
    digest = hashlib.sha256()
    with open(src, "wb") as handle:
        chunk = os.urandom(1 << 20)
        for i in range(size >> 20):
            piece = bytes([i % 256]) + chunk[1:]
            digest.update(piece)
            handle.write(piece)
    sha = digest.hexdigest()
    with _writer(nginx) as cache:
        tracemalloc.start()
        try:
            assert cache.put_blob(sha, src)
            cache.get_blob(sha, size, tmp_path / "copy")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20, f"peak Python allocations {peak} bytes for a {size}-byte blob"
    assert (tmp_path / "copy").stat().st_size == size


# -- configuration ----------------------------------------------------------------


def test_config_from_settings_and_environment() -> None:
    settings = {
        "remote_cache": "https://cache.example:8443/bazel/",
        "remote_timeout": 3,
        "remote_parallel": 8,
        "remote_headers_env": ["CACHE_TOKEN_HEADER", "UNSET_HEADER"],
        "other_setting": "ignored",
    }
    environ = {"CACHE_TOKEN_HEADER": "Authorization: Bearer tok3n\nX-Team: ml"}
    config = remote_config_from(settings, environ)
    assert config == RemoteConfig(
        "https://cache.example:8443/bazel",
        headers={"Authorization": "Bearer tok3n", "X-Team": "ml"},
        timeout=3,
        parallel=8,
    )
    assert "tok3n" not in repr(config) and "'X-Team': '<redacted>'" in repr(config)

    overridden = remote_config_from(
        settings,
        {
            "RULES_KERAS_REMOTE_CACHE": "http://ci:pw@other:8080",
            "RULES_KERAS_REMOTE_UPLOAD": "1",
            "RULES_KERAS_REMOTE_TIMEOUT": "0.5",
        },
    )
    assert overridden is not None
    assert overridden.url == "http://other:8080"
    assert overridden.upload and overridden.timeout == 0.5
    assert overridden.headers == {"Authorization": "Basic Y2k6cHc="}
    assert "pw" not in repr(overridden) and "Y2k6" not in repr(overridden)


def test_config_user_and_password_variables_replace_url_credentials() -> None:
    config = remote_config_from(
        {"remote_cache": "http://old:creds@cache:8080"},
        {"RULES_KERAS_REMOTE_USER": "ci", "RULES_KERAS_REMOTE_PASSWORD": "pw"},
    )
    assert config is not None
    assert config.url == "http://cache:8080"
    assert config.headers == {"Authorization": "Basic Y2k6cHc="}


def test_config_absent_or_switched_off() -> None:
    assert remote_config_from({}, {}) is None
    switched_off = {"RULES_KERAS_REMOTE_CACHE": ""}
    assert remote_config_from({"remote_cache": "http://c"}, switched_off) is None


@pytest.mark.parametrize(
    ("settings", "environ", "message"),
    [
        ({"remote_cahce": "http://c"}, {}, "Did you mean 'remote_cache'"),
        ({"remote_cache": "ftp://c"}, {}, "https://, grpc:// or grpcs:// URL"),
        ({"remote_cache": "http://u:pw@c?x=1"}, {}, r"Received: 'http://\*\*\*@c\?x=1'"),
        ({"remote_cache": "http://c", "remote_upload": "yes"}, {}, "true or false"),
        ({"remote_cache": "http://c", "remote_timeout": 0}, {}, "positive number"),
        ({"remote_cache": "http://c", "remote_parallel": 0}, {}, "integer >= 1"),
        ({"remote_cache": "http://c"}, {"RULES_KERAS_REMOTE_UPLOAD": "maybe"}, "1 or 0"),
        ({"remote_cache": "http://c"}, {"RULES_KERAS_REMOTE_HEADERS": "tok3n"}, "line 1"),
    ],
)
def test_config_errors_name_the_setting(
    settings: dict[str, object], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(RemoteConfigError, match=message) as info:
        remote_config_from(settings, environ)
    assert "pw" not in str(info.value) and "tok3n" not in str(info.value)


def test_keys_are_validated_before_any_request() -> None:
    with RemoteCache(RemoteConfig("http://127.0.0.1:9")) as cache:
        with pytest.raises(ValueError, match="64 lowercase hex"):
            cache.get_ac("../../etc/passwd")
        # Port 9 has no server: a request would have failed and tripped the breaker.
        assert cache.healthy
