"""End to end: the real `doit export` against a real BuildGrid speaking REAPI over gRPC.

Two servers: one holds the examples (plus a model whose weights exceed the
4 MiB batch limit, so blobs travel through ByteStream), the other requires a
JWT and holds a two-target workspace, cheap to rebuild, for the failure cases.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import INSTANCE, BuildGridServer, running_buildgrid

from rules.cache.grpc_remote import GrpcRemoteCache
from rules.cache.reapi import decode_action_result
from rules.cache.remote_config import RemoteConfig
from tests.conftest import (
    EXAMPLE_TARGETS,
    TINY_MODELS,
    assert_artifacts_consistent,
    assert_cache_consistent,
    copy_examples,
    doit,
    new_workspace,
    read_manifests,
    summary,
)

pytestmark = pytest.mark.e2e

HEADER = "from rules import keras_export, keras_model, keras_train\n"
BIG_MODEL = '''
import keras


def build():
    # 1024 x 1280 float32 weights: 5.2 MB, over BuildGrid's 4 MiB batch limit.
    inp = keras.Input((1024,), name="x")
    return keras.Model(inp, keras.layers.Dense(1280)(inp))
'''
NO_TRAINING = "def fit(model):\n    return None\n"
BIG_BUILD = HEADER + '''
keras_train(name="big_weights", factory="models.big.model:build",
            train="models.big.train:fit", seed=0)
keras_model(name="big", factory="models.big.model:build", weights=":big_weights")
keras_export(name="big_serving", model=":big", tolerance=1e-4)
'''
TARGETS = EXAMPLE_TARGETS + 2
TINY_BUILD = HEADER + '''
keras_train(name="w", factory="lib.model:small", train="lib.train:fit", seed=0)
keras_model(name="m", factory="lib.model:small", weights=":w")
keras_export(name="e", model=":m")
'''
TINY = {"lib/__init__.py": "", "lib/model.py": TINY_MODELS, "lib/train.py": NO_TRAINING,
        "m/__init__.py": "", "m/BUILD.py": TINY_BUILD}


def _env(url: str, cache: Path, *, upload: bool = False, **extra: str) -> dict[str, str]:
    return {
        "RULES_KERAS_CACHE_DIR": str(cache),
        "RULES_KERAS_REMOTE_CACHE": url,
        "RULES_KERAS_REMOTE_INSTANCE_NAME": INSTANCE,
        "RULES_KERAS_REMOTE_UPLOAD": "1" if upload else "0",
        **extra,
    }


def _examples(dest: Path) -> Path:
    ws = copy_examples(dest)
    new_workspace(ws, {"models/big/__init__.py": "", "models/big/model.py": BIG_MODEL,
                       "models/big/train.py": NO_TRAINING, "models/big/BUILD.py": BIG_BUILD})
    return ws


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines()
            if "import time:" in line}


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BuildGridServer, Path]]:
    """BuildGrid after a CI-style clone built the examples and uploaded them; and that clone."""
    base = tmp_path_factory.mktemp("grpc")
    with running_buildgrid(base / "bgd") as server:
        ci = _examples(base / "ci")
        result = doit(ci, "-n", "2", "export", env=_env(server.url, base / "ci-cache", upload=True))
        assert result.returncode == 0, result.stdout + result.stderr
        assert summary(result) == f"{TARGETS} built, 0 restored, 0 up to date, 0 failed"
        yield server, ci


def test_uploaded_entries_are_reapi_action_results_whose_blobs_are_all_in_the_cas(
    uploaded: tuple[BuildGridServer, Path],
) -> None:
    server, ci = uploaded
    manifests = read_manifests(ci)
    assert len(manifests) == TARGETS
    biggest = 0
    with GrpcRemoteCache(RemoteConfig(server.url, instance_name=INSTANCE)) as reader:
        for label, manifest in manifests.items():
            data = reader.get_ac(str(manifest["key"]))
            assert data is not None, f"no action result for {label}"
            result = decode_action_result(data)
            assert result.output_files, label
            for output in result.output_files:
                assert reader.has_blob(output.digest.hash, output.digest.size_bytes), output
                biggest = max(biggest, output.digest.size_bytes)
        # The big model's weights could only have gone through ByteStream.
        assert biggest > reader.batch_limit


def test_a_fresh_clone_restores_everything_without_a_backend_and_a_noop_loads_no_grpc(
    uploaded: tuple[BuildGridServer, Path], tmp_path: Path
) -> None:
    server, _ = uploaded
    ws = _examples(tmp_path / "dev")
    env = _env(server.url, tmp_path / "empty-cache", PYTHONPROFILEIMPORTTIME="1")
    result = doit(ws, "export", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == f"0 built, {TARGETS} restored, 0 up to date, 0 failed"
    assert result.stdout.count("from the remote cache") == TARGETS
    top = {name.split(".")[0] for name in _imported(result.stderr)}
    assert not top & {"tensorflow", "keras", "jax"}
    assert "grpc" in top
    assert_artifacts_consistent(ws)
    assert assert_cache_consistent(tmp_path / "empty-cache") == TARGETS

    noop = doit(ws, "export", env=env)
    assert summary(noop) == f"0 built, 0 restored, {TARGETS} up to date, 0 failed"
    loaded = _imported(noop.stderr)
    assert not {n for n in loaded if n.split(".")[0] == "grpc" or "grpc" in n}, loaded


def test_a_read_only_client_uploads_nothing(
    uploaded: tuple[BuildGridServer, Path], tmp_path: Path
) -> None:
    server, _ = uploaded
    ws = _examples(tmp_path / "dev")
    layers = ws / "models/common/layers.py"
    layers.write_text(layers.read_text() + "\n# local change: misses the remote\n")
    before = server.blob_count()
    result = doit(ws, "export", env=_env(server.url, tmp_path / "cache"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == f"2 built, {TARGETS - 2} restored, 0 up to date, 0 failed"
    assert server.blob_count() == before
    changed = [m for m in read_manifests(ws).values() if "tagger" in str(m["label"])]
    with GrpcRemoteCache(RemoteConfig(server.url, instance_name=INSTANCE)) as reader:
        assert all(reader.get_ac(str(m["key"])) is None for m in changed)


# -- a server that requires a token; a workspace that is cheap to rebuild -------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildGridServer]:
    """A JWT-guarded BuildGrid after CI uploaded the two-target workspace."""
    base = tmp_path_factory.mktemp("grpc-auth")
    with running_buildgrid(base / "bgd", auth=True) as server:
        ci = new_workspace(base / "ci", TINY)
        result = doit(ci, "export", env=_env(server.url, base / "ci-cache", upload=True,
                                             RULES_KERAS_REMOTE_HEADERS=_bearer(server)))
        assert result.returncode == 0, result.stdout + result.stderr
        yield server


def _bearer(server: BuildGridServer) -> str:
    return f"Authorization: Bearer {server.token()}"


def test_a_missing_token_is_one_clear_warning_and_a_local_build(
    guarded: BuildGridServer, tmp_path: Path
) -> None:
    ws = new_workspace(tmp_path / "dev", TINY)
    result = doit(ws, "export", env=_env(guarded.url, tmp_path / "cache"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == "2 built, 0 restored, 0 up to date, 0 failed"
    assert result.stderr.count("requires credentials (UNAUTHENTICATED") == 1
    assert "RULES_KERAS_REMOTE_HEADERS" in result.stderr


def test_a_wrong_instance_name_is_one_clear_warning_and_a_local_build(
    guarded: BuildGridServer, tmp_path: Path
) -> None:
    ws = new_workspace(tmp_path / "dev", TINY)
    bearer = _bearer(guarded)
    env = _env(guarded.url, tmp_path / "cache", RULES_KERAS_REMOTE_HEADERS=bearer,
               RULES_KERAS_REMOTE_INSTANCE_NAME="ci/wrong")
    result = doit(ws, "export", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == "2 built, 0 restored, 0 up to date, 0 failed"
    assert result.stderr.count("has no instance 'ci/wrong' (remote_instance_name)") == 1
    assert bearer.split()[-1] not in result.stdout + result.stderr


def test_the_server_stopped_mid_build_costs_one_warning_and_a_local_build(
    guarded: BuildGridServer, tmp_path: Path
) -> None:
    """Last in the module: it stops the server."""
    ws = new_workspace(tmp_path / "dev", TINY)
    env = dict(_env(guarded.url, tmp_path / "cache", RULES_KERAS_REMOTE_HEADERS=_bearer(guarded),
                    RULES_KERAS_PAUSE_AT="publish:3"))
    process = subprocess.Popen(
        [sys.executable, "-m", "doit", "export"], cwd=ws, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stderr is not None
    stderr = []
    # The weights are restored first; while they are being published, the server goes.
    for line in process.stderr:
        stderr.append(line)
        if "paused at publish" in line:
            guarded.stop()
            break
    out, rest = process.communicate(timeout=900)
    stderr.append(rest)
    text = "".join(stderr)
    assert process.returncode == 0, out + text
    assert summary(subprocess.CompletedProcess([], 0, out, text)) == \
        "1 built, 1 restored, 0 up to date, 0 failed"
    warnings = [line for line in text.splitlines() if "warning" in line and "remote" in line]
    assert len(warnings) == 1, warnings
    assert "is the cache server running" in warnings[0]
    assert_artifacts_consistent(ws)
