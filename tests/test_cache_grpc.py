"""Tests for the REAPI gRPC remote cache (rules.cache.grpc_*) against a real BuildGrid.

BuildGrid 0.4.4 can require auth (JWT, HS256 here), so the missing-API-key
case runs against a real server too. It always offers sha256, so a server
without it is covered at the codec level only.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import INSTANCE, BuildGridServer, free_port, running_buildgrid

from rules.cache import reapi_rpc as rpc
from rules.cache.grpc_errors import InstanceError
from rules.cache.grpc_remote import GrpcRemoteCache
from rules.cache.reapi import (
    ActionResultMessage,
    Digest,
    OutputFile,
    decode_action_result,
    encode_action_result,
)
from rules.cache.remote import RemoteAuthError, RemoteCorrupt, RemoteUnavailable
from rules.cache.remote_config import (
    RemoteConfig,
    RemoteConfigError,
    RemoteError,
    remote_config_from,
)


@pytest.fixture(scope="module")
def bgd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildGridServer]:
    with running_buildgrid(tmp_path_factory.mktemp("bgd"), tls=True) as server:
        yield server


def _writer(server: BuildGridServer, **extra: object) -> GrpcRemoteCache:
    return GrpcRemoteCache(RemoteConfig(server.url, upload=True, instance_name=INSTANCE,
                                        **extra))  # type: ignore[arg-type]


def _reader(server: BuildGridServer) -> GrpcRemoteCache:
    return GrpcRemoteCache(RemoteConfig(server.url, instance_name=INSTANCE))


def _blobs(tmp_path: Path, *sizes: int) -> dict[str, Path]:
    files = {}
    for size in sizes:
        data = os.urandom(size)
        sha256 = hashlib.sha256(data).hexdigest()
        path = tmp_path / "src" / sha256
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[sha256] = path
    return files


def _digests(files: dict[str, Path]) -> list[Digest]:
    return [Digest(sha256, path.stat().st_size) for sha256, path in files.items()]


# -- the codec -------------------------------------------------------------


def test_capabilities_are_decoded_from_packed_and_unpacked_digest_functions() -> None:
    updates = b"\x08\x01"                         # update_enabled = true
    cache = (b"\x0a\x01\x02"                       # digest_functions, packed: [SHA1]
             + b"\x08\x01"                         # and one unpacked: SHA256
             + b"\x12" + bytes([len(updates)]) + updates
             + b"\x20\x80\x80\x80\x02")           # max_batch_total_size_bytes = 4 MiB
    caps = rpc.decode_capabilities(b"\x0a" + bytes([len(cache)]) + cache)
    assert caps == rpc.Capabilities((2, rpc.SHA256), True, 4 << 20)
    # A server with no cache capabilities offers no digest function: refused by the client.
    assert rpc.decode_capabilities(b"").digest_functions == ()


def test_batch_read_response_round_trips_through_the_codec() -> None:
    digest = Digest("ab" * 32, 3)
    status = b"\x08\x05\x12\x07missing"                      # code NOT_FOUND, message
    response = (b"\x0a" + bytes([len(rpc.encode_digest(digest))]) + rpc.encode_digest(digest)
                + b"\x12\x03abc" + b"\x1a" + bytes([len(status)]) + status)
    [decoded] = rpc.decode_batch_responses(b"\x0a" + bytes([len(response)]) + response,
                                           with_data=True)
    assert decoded == rpc.BlobResponse(digest, rpc.Status(5, "missing"), b"abc")


# -- settings ----------------------------------------------------------------


def test_grpc_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = remote_config_from(
        {"remote_cache": "grpcs://cache.example:443", "remote_instance_name": "ci/main"},
        {"RULES_KERAS_REMOTE_CA_FILE": "/etc/ca.pem",
         "RULES_KERAS_REMOTE_HEADERS": "x-buildbuddy-api-key: s3cret"},
    )
    assert config is not None and config.is_grpc
    assert (config.instance_name, config.ca_file) == ("ci/main", "/etc/ca.pem")
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "grpc://c:1/main"}, "no path; put the instance name in remote_instance_name"),
        ({"url": "http://c", "instance_name": "x"}, "only apply to a grpc"),
        ({"url": "grpc://c:1", "ca_file": "/ca.pem"}, "need TLS: use grpcs://"),
        ({"url": "grpcs://c:1", "client_cert": "/c.pem"}, "needs both remote_client_cert"),
    ],
)
def test_bad_grpc_settings_name_the_setting(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(RemoteConfigError, match=message):
        RemoteConfig(**kwargs)  # type: ignore[arg-type]


def test_an_unreadable_ca_file_is_one_clear_error(tmp_path: Path) -> None:
    cache = GrpcRemoteCache(RemoteConfig("grpcs://127.0.0.1:1", ca_file=str(tmp_path / "no.pem")))
    with pytest.raises(RemoteConfigError, match="remote_ca_file: cannot read"):
        cache.get_ac("a" * 64)
    assert not cache.healthy


# -- against BuildGrid ---------------------------------------------------------


def test_blobs_round_trip_and_find_missing_blobs_stops_a_second_upload(
    bgd: BuildGridServer, tmp_path: Path
) -> None:
    files = _blobs(tmp_path, 1, 1000, 100_000, 0)
    with _writer(bgd) as cache:
        first = cache.put_blobs(files)
        assert len(first.uploaded) == 3  # the empty blob is never sent
        count = bgd.blob_count()
        again = cache.put_blobs(files)
        assert again.uploaded == () and set(again.present) == set(files)
        assert bgd.blob_count() == count
        report = cache.get_blobs(_digests(files), tmp_path / "out")
        assert set(report.fetched) == set(files) and report.missing == ()
        assert cache.stats().streams == 0
    for sha256, src in files.items():
        assert (tmp_path / "out" / sha256).read_bytes() == src.read_bytes()


def test_a_blob_over_the_batch_limit_goes_through_bytestream(
    bgd: BuildGridServer, tmp_path: Path
) -> None:
    with _writer(bgd) as cache:
        limit = cache.batch_limit
        assert 0 < limit <= 4 << 20  # BuildGrid states ~4 MiB
        files = _blobs(tmp_path, limit + 1, 10)
        cache.put_blobs(files)
        assert cache.stats().streams == 1
    with _reader(bgd) as reader:
        report = reader.get_blobs(_digests(files), tmp_path / "out")
        assert reader.stats().streams == 1
    assert set(report.fetched) == set(files)
    for sha256, src in files.items():
        assert (tmp_path / "out" / sha256).read_bytes() == src.read_bytes()


def test_missing_blobs_are_reported_not_raised(bgd: BuildGridServer, tmp_path: Path) -> None:
    absent = [Digest("0" * 64, 5), Digest("1" * 64, 5 << 20)]  # one batched, one streamed
    with _reader(bgd) as cache:
        report = cache.get_blobs(absent, tmp_path / "out")
    assert set(report.missing) == {d.hash for d in absent} and report.fetched == ()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("size", [1000, 5 << 20], ids=["batch", "bytestream"])
def test_a_corrupt_blob_on_the_server_is_refused_and_never_written(
    bgd: BuildGridServer, tmp_path: Path, size: int
) -> None:
    files = _blobs(tmp_path, size)
    [(sha256, _)] = files.items()
    with _writer(bgd) as cache:
        cache.put_blobs(files)
    stored = bgd.blob_path(sha256)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    with _reader(bgd) as reader, pytest.raises(RemoteCorrupt, match="corrupt"):
        reader.get_blob(sha256, size, tmp_path / "out" / sha256)
    assert not (tmp_path / "out" / sha256).exists()
    assert not [p for p in (tmp_path / "out").iterdir()], "no temp file may be left"


def test_action_results_round_trip_and_a_miss_is_none(
    bgd: BuildGridServer, tmp_path: Path
) -> None:
    files = _blobs(tmp_path, 3)
    [digest] = _digests(files)
    result = encode_action_result(ActionResultMessage((OutputFile("a/b", digest),), 0, b"{}"))
    with _writer(bgd) as cache:
        assert cache.get_ac("cd" * 32) is None
        # BuildGrid, like Bazel's caches, only serves an entry whose blobs it has.
        cache.put_ac("ef" * 32, result)
        assert cache.get_ac("ef" * 32) is None
        cache.put_blobs(files)
        cache.put_ac("ef" * 32, result)
    with _reader(bgd) as reader:
        served = reader.get_ac("ef" * 32)
    assert served is not None and decode_action_result(served) == decode_action_result(result)


def test_a_read_only_client_uploads_nothing(bgd: BuildGridServer, tmp_path: Path) -> None:
    files = _blobs(tmp_path, 10, 20)
    before = bgd.blob_count()
    with _reader(bgd) as cache:
        with pytest.raises(RemoteError, match="read-only client"):
            cache.put_blobs(files)
        with pytest.raises(RemoteError, match="read-only client"):
            cache.put_ac("12" * 32, b"")
        assert cache.stats().calls == 0
    assert bgd.blob_count() == before


def test_a_wrong_instance_name_is_one_clear_error_then_fails_fast(bgd: BuildGridServer) -> None:
    cache = GrpcRemoteCache(RemoteConfig(bgd.url, instance_name="no-such-instance"))
    with pytest.raises(InstanceError, match="has no instance 'no-such-instance' "
                                            r"\(remote_instance_name\)"):
        cache.get_ac("ab" * 32)
    calls = cache.stats().calls
    with pytest.raises(InstanceError, match="skipped"):
        cache.get_ac("ab" * 32)
    assert cache.stats().calls == calls and not cache.healthy


def test_an_unreachable_server_trips_the_breaker(tmp_path: Path) -> None:
    cache = GrpcRemoteCache(RemoteConfig(f"grpc://127.0.0.1:{free_port()}", timeout=2))
    with pytest.raises(RemoteUnavailable, match="is the cache server running"):
        cache.get_ac("ab" * 32)
    assert not cache.healthy
    with pytest.raises(RemoteUnavailable, match="skipped"):
        cache.get_blobs([Digest("ab" * 32, 1)], tmp_path)


def test_mtls_with_the_ca_and_a_client_certificate(bgd: BuildGridServer, tmp_path: Path) -> None:
    files = _blobs(tmp_path, 100)
    with GrpcRemoteCache(RemoteConfig(
        bgd.grpcs_url, upload=True, instance_name=INSTANCE, ca_file=str(bgd.ca_file),
        client_cert=str(bgd.client_cert), client_key=str(bgd.client_key),
    )) as cache:
        assert len(cache.put_blobs(files).uploaded) == 1


@pytest.mark.parametrize("with_ca", [False, True], ids=["unknown-ca", "no-client-cert"])
def test_tls_failures_say_which_setting_to_check(bgd: BuildGridServer, with_ca: bool) -> None:
    config = RemoteConfig(bgd.grpcs_url, instance_name=INSTANCE,
                          ca_file=str(bgd.ca_file) if with_ca else None, timeout=5)
    with GrpcRemoteCache(config) as cache, pytest.raises(RemoteUnavailable) as caught:
        cache.get_ac("ab" * 32)
    assert "TLS handshake failed" in str(caught.value)
    assert "remote_ca_file" in str(caught.value) and "remote_client_cert" in str(caught.value)


def test_a_server_that_requires_a_token_refuses_a_client_without_one(tmp_path: Path) -> None:
    with running_buildgrid(tmp_path / "bgd", auth=True) as server:
        anonymous = GrpcRemoteCache(RemoteConfig(server.url, instance_name=INSTANCE))
        with pytest.raises(RemoteAuthError, match=r"requires credentials \(UNAUTHENTICATED"):
            anonymous.get_ac("ab" * 32)
        assert not anonymous.healthy

        wrong = GrpcRemoteCache(RemoteConfig(
            server.url, instance_name=INSTANCE, headers={"Authorization": "Bearer not.a.jwt"},
        ))
        with pytest.raises(RemoteAuthError, match="rejected the credentials") as caught:
            wrong.get_ac("ab" * 32)
        assert "not.a.jwt" not in str(caught.value)

        token = server.token()
        with GrpcRemoteCache(RemoteConfig(
            server.url, instance_name=INSTANCE, headers={"Authorization": f"Bearer {token}"},
        )) as cache:
            assert cache.get_ac("ab" * 32) is None
            assert token not in repr(cache.config)


def test_a_configured_grpc_remote_loads_no_grpc_until_it_is_called(tmp_path: Path) -> None:
    """Setting up the tiers (what a build does before it knows it needs them) costs no grpcio."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from rules.cache.local import LocalCache\n"
        "from rules.cache.remote_config import RemoteConfig\n"
        "from rules.cache.tiers import TieredCache\n"
        "tiers = TieredCache(LocalCache(Path(sys.argv[1])), RemoteConfig('grpc://127.0.0.1:1'), "
        "print)\n"
        "assert type(tiers.remote).__name__ == 'GrpcRemoteCache'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
