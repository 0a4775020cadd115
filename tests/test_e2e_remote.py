"""End to end: the real `doit export` against a real nginx speaking Bazel's HTTP cache protocol."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import PASSWORD, USER, NginxServer, running_nginx

from tests.conftest import (
    EXAMPLE_TARGETS,
    assert_artifacts_consistent,
    assert_cache_consistent,
    built_labels,
    copy_examples,
    doit,
    summary,
)

pytestmark = pytest.mark.e2e

TARGETS = EXAMPLE_TARGETS


def _remote_env(url: str, cache: Path, *, upload: bool = False, **extra: str) -> dict[str, str]:
    env = {
        "RULES_KERAS_CACHE_DIR": str(cache),
        "RULES_KERAS_REMOTE_CACHE": url,
        "RULES_KERAS_REMOTE_UPLOAD": "1" if upload else "0",
    }
    env.update(extra)
    return env


def _ci_env(server: NginxServer, cache: Path) -> dict[str, str]:
    return _remote_env(
        server.url, cache, upload=True,
        RULES_KERAS_REMOTE_USER=USER, RULES_KERAS_REMOTE_PASSWORD=PASSWORD,
    )


def _puts(server: NginxServer) -> list[str]:
    return [e.uri for e in server.access_log() if e.method == "PUT"]


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    """nginx after a CI-style clone built the examples and uploaded them."""
    base = tmp_path_factory.mktemp("remote")
    with running_nginx(base / "nginx") as server:
        ci = copy_examples(base / "ci")
        result = doit(ci, "export", env=_ci_env(server, base / "ci-cache"))
        assert result.returncode == 0, result.stdout + result.stderr
        yield server


def test_a_ci_clone_uploads_blobs_then_action_results(uploaded: NginxServer) -> None:
    puts = _puts(uploaded)
    ac = [u for u in puts if "/ac/" in u]
    cas = [u for u in puts if "/cas/" in u]
    assert len(ac) == TARGETS
    assert cas
    statuses = {e.status for e in uploaded.access_log() if e.method == "PUT"}
    assert statuses <= {201, 204}
    # Every action result arrived after the blobs it names (blobs first, AC last).
    order = [e.uri for e in uploaded.access_log() if e.method == "PUT"]
    assert order.index(ac[0]) > order.index(cas[0])


def test_a_fresh_clone_restores_everything_from_the_remote_without_tensorflow(
    uploaded: NginxServer, tmp_path: Path
) -> None:
    ws = copy_examples(tmp_path / "dev")
    env = _remote_env(uploaded.ro_url, tmp_path / "empty-cache", PYTHONPROFILEIMPORTTIME="1")
    result = doit(ws, "export", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == f"0 built, {TARGETS} restored, 0 up to date, 0 failed"
    assert result.stdout.count("from the remote cache") == TARGETS
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0]
               for line in result.stderr.splitlines() if "import time:" in line}
    assert not modules & {"tensorflow", "keras", "jax"}
    assert_artifacts_consistent(ws)
    # Remote hits were kept in the local cache.
    assert assert_cache_consistent(tmp_path / "empty-cache") == TARGETS


def test_a_read_only_client_never_sends_a_put(uploaded: NginxServer, tmp_path: Path) -> None:
    ws = copy_examples(tmp_path / "dev")
    layers = ws / "models/common/layers.py"
    layers.write_text(layers.read_text() + "\n# local change: misses the remote\n")
    before = len(_puts(uploaded))
    # Even with write credentials, upload stays off unless asked for.
    env = _remote_env(
        uploaded.url, tmp_path / "cache",
        RULES_KERAS_REMOTE_USER=USER, RULES_KERAS_REMOTE_PASSWORD=PASSWORD,
    )
    result = doit(ws, "export", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == f"2 built, {TARGETS - 2} restored, 0 up to date, 0 failed"
    after = uploaded.access_log()
    assert len([e for e in after if e.method == "PUT"]) == before
    assert any(e.method == "GET" and e.user == USER for e in after)


def test_a_corrupt_blob_on_the_server_is_detected_rebuilt_and_not_used(
    uploaded: NginxServer, tmp_path: Path
) -> None:
    source = copy_examples(tmp_path / "probe")
    import json

    probe = doit(source, "export", env=_remote_env(uploaded.ro_url, tmp_path / "probe-cache"))
    assert probe.returncode == 0
    manifest = source / "artifacts/models/mnist/mnist_serving.manifest.json"
    biggest = max(json.loads(manifest.read_text())["files"], key=lambda f: f[2])
    blob = uploaded.root / "cas" / biggest[1]
    original = blob.read_bytes()
    corrupt = bytearray(original)
    corrupt[len(corrupt) // 2] ^= 0xFF
    blob.write_bytes(bytes(corrupt))
    try:
        ws = copy_examples(tmp_path / "dev")
        cache = tmp_path / "cache"
        result = doit(ws, "export", env=_remote_env(uploaded.ro_url, cache))
    finally:
        blob.write_bytes(original)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "remote cache" in result.stderr and "corrupt" in result.stderr
    assert summary(result) == f"1 built, {TARGETS - 1} restored, 0 up to date, 0 failed"
    assert built_labels(result) == {"//models/mnist:mnist_serving"}
    assert_artifacts_consistent(ws)
    assert_cache_consistent(cache)


def test_wrong_credentials_give_a_clear_warning_and_a_local_build(
    uploaded: NginxServer, tmp_path: Path
) -> None:
    ws = copy_examples(tmp_path / "dev")
    env = _remote_env(
        uploaded.url, tmp_path / "cache",
        RULES_KERAS_REMOTE_USER=USER, RULES_KERAS_REMOTE_PASSWORD="wrong-password",
    )
    result = doit(ws, "export", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rejected the credentials (HTTP 401)" in result.stderr
    assert "wrong-password" not in result.stdout + result.stderr
    assert result.stderr.count("rejected the credentials") == 1
    assert summary(result) == f"{TARGETS} built, 0 restored, 0 up to date, 0 failed"


def test_stopping_the_server_mid_build_degrades_to_a_local_build(tmp_path: Path) -> None:
    with running_nginx(tmp_path / "nginx") as server:
        ws = copy_examples(tmp_path / "ws")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
        env.update(_ci_env(server, tmp_path / "cache"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "doit", "export"], cwd=ws, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        seen = ""
        for line in proc.stdout:
            seen += line
            if "] built " in line:  # the first target's line
                server.stop()
                break
        out, err = proc.communicate(timeout=900)
    out = seen + out
    assert proc.returncode == 0, out + err
    assert "remote cache" in err
    assert "building locally" in err or "upload failed" in err
    assert f"{TARGETS} built, 0 restored" in out
    assert_artifacts_consistent(ws)
