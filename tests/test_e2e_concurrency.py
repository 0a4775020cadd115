"""End to end: concurrent builds, shared caches, crashes and gc, with real doit processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (
    EXAMPLE_TARGETS,
    assert_artifacts_consistent,
    assert_cache_consistent,
    built_labels,
    copy_examples,
    counts,
    doit,
    summary,
)

pytestmark = pytest.mark.e2e

TARGETS = EXAMPLE_TARGETS


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    env["RULES_KERAS_CACHE_DIR"] = str(cache)
    env.update(extra)
    return env


def _spawn(ws: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "doit", *args],
        cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # so a SIGKILL reaches the workers too
    )


def test_four_concurrent_builds_export_each_target_exactly_once(tmp_path: Path) -> None:
    ws = copy_examples(tmp_path / "ws")
    cache = tmp_path / "cache"
    procs = [_spawn(ws, _env(cache), "export") for _ in range(4)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
    found = [counts(subprocess.CompletedProcess([], 0, out, err)) for out, err in outputs]
    assert sum(c["built"] for c in found) == TARGETS, found
    assert all(c["failed"] == 0 for c in found)
    assert assert_artifacts_consistent(ws) == TARGETS
    assert assert_cache_consistent(cache) == TARGETS


def test_a_second_clone_sharing_the_cache_builds_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = copy_examples(tmp_path / "a")
    assert doit(first, "export", env={"RULES_KERAS_CACHE_DIR": str(cache)}).returncode == 0
    second = copy_examples(tmp_path / "b")
    result = doit(
        second, "export",
        env={"RULES_KERAS_CACHE_DIR": str(cache), "PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == f"0 built, {TARGETS} restored, 0 up to date, 0 failed"
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0]
               for line in result.stderr.splitlines() if "import time:" in line}
    assert not modules & {"tensorflow", "keras", "jax"}
    assert "from the local cache" in result.stdout
    assert_artifacts_consistent(second)


@pytest.mark.parametrize("point", ["export", "publish", "cache_store"])
def test_sigkill_at_each_step_leaves_nothing_half_written(tmp_path: Path, point: str) -> None:
    ws = copy_examples(tmp_path / "ws")
    cache = tmp_path / "cache"
    # Build once so that `publish` also exercises replacing an existing artifact.
    assert doit(ws, "export", env={"RULES_KERAS_CACHE_DIR": str(cache)}).returncode == 0
    layers = ws / "models/common/layers.py"
    layers.write_text(layers.read_text() + "\n# changed\n")
    proc = _spawn(ws, _env(cache, RULES_KERAS_PAUSE_AT=point), "export")
    deadline = time.monotonic() + 300
    assert proc.stderr is not None
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if f"paused at {point}" in line or not line:
            break
    assert f"paused at {point}" in seen, seen
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)

    assert_cache_consistent(cache)
    # What is visible now is either the old artifact or the new one, each whole.
    for mpath in (ws / "artifacts").rglob("*.manifest.json"):
        assert mpath.read_text().endswith("}\n")
    after = doit(ws, "export", env={"RULES_KERAS_CACHE_DIR": str(cache)})
    assert after.returncode == 0, after.stdout + after.stderr
    assert counts(after)["failed"] == 0
    assert assert_artifacts_consistent(ws) == TARGETS
    assert_cache_consistent(cache)
    again = doit(ws, "export", env={"RULES_KERAS_CACHE_DIR": str(cache)})
    assert summary(again) == f"0 built, 0 restored, {TARGETS} up to date, 0 failed"


def test_a_flipped_byte_in_a_cached_blob_is_detected_and_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = copy_examples(tmp_path / "a")
    assert doit(first, "export", env={"RULES_KERAS_CACHE_DIR": str(cache)}).returncode == 0
    manifest = first / "artifacts/models/mnist/mnist_serving.manifest.json"
    import json

    files = json.loads(manifest.read_text())["files"]
    biggest = max(files, key=lambda f: f[2])
    blob = cache / "cas" / biggest[1][:2] / biggest[1]
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))

    second = copy_examples(tmp_path / "b")
    result = doit(second, "-v", "2", "export", env={"RULES_KERAS_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stdout + result.stderr
    # One warning naming the target and the blob, and the reason says why it was built.
    assert f"//models/mnist:mnist_serving: cache blob {blob} is corrupt" in result.stderr
    assert "building: cache entry corrupt; rebuilt" in result.stdout
    assert summary(result) == f"1 built, {TARGETS - 1} restored, 0 up to date, 0 failed"
    assert built_labels(result) == {"//models/mnist:mnist_serving"}
    assert_artifacts_consistent(second)
    assert_cache_consistent(cache)


def test_gc_to_a_size_limit_while_a_build_runs(tmp_path: Path) -> None:
    ws = copy_examples(tmp_path / "ws")
    cache = tmp_path / "cache"
    build = _spawn(ws, _env(cache), "-n", "2", "export")
    collections = 0
    while build.poll() is None and collections < 200:
        gc = doit(ws, "cache_gc", "--max-size", "100K", env={"RULES_KERAS_CACHE_DIR": str(cache)})
        assert gc.returncode == 0, gc.stdout + gc.stderr
        collections += 1
    out, err = build.communicate(timeout=900)
    assert build.returncode == 0, out + err
    assert collections >= 2
    assert assert_artifacts_consistent(ws) == TARGETS
    assert_cache_consistent(cache)
    stats = doit(ws, "cache_stats", env={"RULES_KERAS_CACHE_DIR": str(cache)})
    assert "action results" in stats.stdout


def test_inputs_changed_during_the_build_are_published_but_not_cached(tmp_path: Path) -> None:
    ws = copy_examples(tmp_path / "ws")
    cache = tmp_path / "cache"
    weights = ws / "models/ranker/ranker.weights.h5"
    proc = _spawn(ws, _env(cache, RULES_KERAS_PAUSE_AT="export:6"),
                  "//models/ranker:ranker_serving")
    assert proc.stderr is not None
    line = ""
    while "paused at export" not in line:
        line = proc.stderr.readline()
        assert line, "the build ended before reaching the export"
    # The worker has read the weights and is exporting: change them under it.
    weights.write_bytes(weights.read_bytes() + b"\0")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "inputs changed during the build; not cached" in err
    assert assert_cache_consistent(cache) == 0
    # The manifest keeps the key of the inputs the export started from, so the
    # next build sees the change (and, the file now being garbage, fails on it).
    after = doit(ws, "-v", "2", "//models/ranker:ranker_serving",
                 env={"RULES_KERAS_CACHE_DIR": str(cache)})
    assert "models/ranker/ranker.weights.h5:" in after.stdout
