"""The reliability suite: attacks on real builds, each counted, none allowed to leave wrong bytes.

Run it alone, with as many kill trials as you like:

    RULES_KERAS_RELIABILITY_TRIALS=24 pytest -m reliability -s

It prints a table per attack (trials, and failures by kind) and, given
RULES_KERAS_RELIABILITY_REPORT=path.json, writes it there; RELIABILITY.md
records a run. Without the variable the kill attack runs 4 trials, so the
suite stays affordable in CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hostile_server import MODES, running_hostile

from tests.conftest import (
    TINY_MODELS,
    assert_artifacts_consistent,
    assert_cache_consistent,
    counts,
    doit,
    new_workspace,
    read_manifests,
    server_info,
    stop_servers,
)

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

TRIALS = int(os.environ.get("RULES_KERAS_RELIABILITY_TRIALS", "4"))
HEADER = "from rules import keras_export, keras_model, keras_train\n"
FILES = {
    "lib/__init__.py": "",
    "lib/model.py": TINY_MODELS + '''

def fit(model):
    import numpy as np
    x = np.random.RandomState(0).randn(32, 4).astype("float32")
    model.compile("sgd", "mse")
    model.fit(x, x[:, :2], epochs=1, verbose=0)
''',
    "m/BUILD.py": HEADER + (
        'keras_train(name="w", factory="lib.model:small", train="lib.model:fit")\n'
        'keras_model(name="m", factory="lib.model:small", weights=":w")\n'
        'keras_export(name="e", model=":m", serving="tiny")\n'
        'keras_export(name="o", model=":m", format="onnx")\n'
        'keras_model(name="n", factory="lib.model:other", weights=":v")\n'
        'keras_train(name="v", factory="lib.model:other", train="lib.model:fit_other")\n'
        'keras_export(name="f", model=":n")\n'
    ),
    "pyproject.toml": '[tool.rules_keras]\nserving_root = "serving"\n',
}
FILES["lib/model.py"] += '''

def fit_other(model):
    import numpy as np
    x = np.random.RandomState(1).randn(32, 4).astype("float32")
    model.compile("sgd", "mse")
    model.fit(x, x[:, :3], epochs=1, verbose=0)
'''
TARGETS = 5
RESULTS: dict[str, Counter[str]] = {}


def _record(attack: str, outcome: str) -> None:
    RESULTS.setdefault(attack, Counter())[outcome] += 1


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    lines = ["", "attack | trials | ok | failures by kind", "--- | --- | --- | ---"]
    for attack, outcomes in RESULTS.items():
        bad = {k: v for k, v in outcomes.items() if k != "ok"}
        lines.append(f"{attack} | {sum(outcomes.values())} | {outcomes['ok']} | "
                     + (", ".join(f"{k}: {v}" for k, v in sorted(bad.items())) or "none"))
    print("\n".join(lines))
    path = os.environ.get("RULES_KERAS_RELIABILITY_REPORT")
    if path:
        Path(path).write_text(json.dumps({k: dict(v) for k, v in RESULTS.items()}, indent=1))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[list[object]]]:
    """What a clean build produces: label -> its reproducible files (path, sha256, size)."""
    ws = new_workspace(tmp_path_factory.mktemp("reference") / "ws", FILES)
    result = doit(ws, "export")
    assert result.returncode == 0, result.stdout + result.stderr
    stop_servers()
    return reproducible(ws)


def reproducible(ws: Path) -> dict[str, list[list[object]]]:
    """Per label, the files whose bytes every correct build reproduces: trained weights and
    SavedModel variables. (A graph's bytes vary with the process that traced it: function
    names carry a per-process counter, so saved_model.pb and .onnx files are judged by
    their manifests, and their keys, instead.)"""
    return {
        label: [f[:3] for f in manifest["files"]  # type: ignore[attr-defined]
                if f[0].endswith(".weights.h5") or f[0].startswith("variables/")]
        for label, manifest in read_manifests(ws).items()
    }


def _verify(ws: Path, cache: Path, reference: dict[str, list[list[object]]]) -> str:
    """'ok', or what is wrong after a clean rebuild of a workspace that was attacked."""
    result = doit(ws, "export", env={"RULES_KERAS_CACHE_DIR": str(cache)})
    if result.returncode != 0:
        return "rebuild failed"
    try:
        assert assert_artifacts_consistent(ws, load=False) == TARGETS
        assert_cache_consistent(cache)
    except (AssertionError, OSError):
        return "corrupt"
    if reproducible(ws) != reference:
        return "wrong bytes"
    again = doit(ws, "export", env={"RULES_KERAS_CACHE_DIR": str(cache)})
    if counts(again) != {"built": 0, "restored": 0, "up to date": TARGETS, "failed": 0}:
        return "not stable"
    served = ws / "serving/tiny"
    newest = max(int(p.name) for p in served.iterdir() if p.name.isdigit())
    for rel, sha, _size in reference["//m:e"]:
        if hashlib.sha256((served / str(newest) / str(rel)).read_bytes()).hexdigest() != sha:
            return "wrong served bytes"
    return "ok"


# -- kill -9 at random moments ------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode()
    except OSError:
        return ""


def _victim(kind: str, doit_pid: int, ws: Path) -> int | None:
    if kind == "doit":
        return doit_pid
    if kind == "worker":
        return next((p for p in _children(doit_pid) if "rules.execution.worker" in _cmdline(p)),
                    None)
    info = server_info()
    server = info.get("pid") if info else None
    if not isinstance(server, int):
        return None
    if kind == "server":
        return server
    return next(iter(_children(server)), None)  # an export child or the spare


KINDS = ("doit", "server", "server child", "worker")


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill_9_at_a_random_moment_leaves_nothing_wrong(
    tmp_path: Path, trial: int, reference: dict[str, list[list[object]]]
) -> None:
    kind = KINDS[trial % len(KINDS)]
    rng = random.Random(trial)
    ws = new_workspace(tmp_path / "ws", FILES)
    cache = tmp_path / "cache"
    env = {**os.environ, "RULES_KERAS_CACHE_DIR": str(cache),
           "RULES_KERAS_SERVER": "0" if kind == "worker" else "1"}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    proc = subprocess.Popen([sys.executable, "-m", "doit", "-n", "2", "export"], cwd=ws, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + rng.uniform(1.0, 25.0)
    killed = None
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    if proc.poll() is None:
        killed = _victim(kind, proc.pid, ws)
        if killed is not None:
            os.kill(killed, signal.SIGKILL)
    try:
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        _record(f"kill -9 {kind}", "hung")
        pytest.fail(f"doit hung after {kind} pid {killed} was killed")
    outcome = _verify(ws, cache, reference)
    stop_servers()
    _record(f"kill -9 {kind}", outcome if killed is not None or outcome != "ok" else "ok")
    assert outcome == "ok", f"after killing the {kind} (pid {killed}): {outcome}"


# -- concurrent builds -------------------------------------------------------------------


def test_concurrent_builds_and_gc_build_each_target_once(
    tmp_path: Path, reference: dict[str, list[list[object]]]
) -> None:
    ws = new_workspace(tmp_path / "ws", FILES)
    cache = tmp_path / "cache"
    env = {**os.environ, "RULES_KERAS_CACHE_DIR": str(cache)}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    procs = [subprocess.Popen([sys.executable, "-m", "doit", "export"], cwd=ws, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    gc = doit(ws, "cache_gc", "--max-size", "10G", env={"RULES_KERAS_CACHE_DIR": str(cache)})
    outputs = [p.communicate(timeout=900) for p in procs]
    built = 0
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            _record("3 concurrent builds + gc", "a build failed")
            pytest.fail(out + err)
        built += counts(subprocess.CompletedProcess([], 0, out, err))["built"]
    outcome = "built twice" if built != TARGETS else _verify(ws, cache, reference)
    stop_servers()
    _record("3 concurrent builds + gc", outcome)
    assert gc.returncode == 0 and outcome == "ok", outcome


# -- tampering -----------------------------------------------------------------------------


def _flip(path: Path, offset: int = -20) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _blobs(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "cas").glob("*/*") if not p.name.startswith("."))


def _make_writable(path: Path) -> None:
    path.chmod(0o644)


def _tamper_blob(cache: Path, how: Callable[[Path], None]) -> None:
    for blob in _blobs(cache):
        _make_writable(blob)
        how(blob)


TAMPERINGS: dict[str, Callable[[Path, Path], None]] = {
    "artifact byte flipped, mtime kept": lambda ws, cache: _flip(
        ws / "artifacts/m/e/variables/variables.data-00000-of-00001"),
    "onnx byte flipped, mtime kept": lambda ws, cache: _flip(ws / "artifacts/m/o.onnx"),
    "extra file in a SavedModel": lambda ws, cache: (
        ws / "artifacts/m/e/variables/evil.txt").write_text("evil"),
    "artifact file deleted": lambda ws, cache: (ws / "artifacts/m/e/saved_model.pb").unlink(),
    "manifest garbage": lambda ws, cache: (ws / "artifacts/m/e.manifest.json").write_text("{"),
    "artifact folder replaced by a file": lambda ws, cache: (
        subprocess.run(["rm", "-rf", str(ws / "artifacts/m/e")], check=True),
        (ws / "artifacts/m/e").write_text("not a SavedModel")),
    "input weights flipped, mtime kept": lambda ws, cache: _flip(
        ws / "artifacts/m/w.weights.h5", -100),
    "served copy flipped, mtime kept": lambda ws, cache: _flip(
        ws / "serving/tiny/1/variables/variables.data-00000-of-00001"),
    "every cas blob flipped, artifacts gone": lambda ws, cache: (
        _tamper_blob(cache, _flip),
        subprocess.run(["rm", "-rf", str(ws / "artifacts")], check=True)),
    "every cas blob truncated, artifacts gone": lambda ws, cache: (
        _tamper_blob(cache, lambda b: b.write_bytes(b.read_bytes()[:-1])),
        subprocess.run(["rm", "-rf", str(ws / "artifacts")], check=True)),
    "every cas blob grown by a byte, artifacts gone": lambda ws, cache: (
        _tamper_blob(cache, lambda b: b.write_bytes(b.read_bytes() + b"\0")),
        subprocess.run(["rm", "-rf", str(ws / "artifacts")], check=True)),
    "every ac entry flipped, artifacts gone": lambda ws, cache: (
        [_flip(p, len(p.read_bytes()) // 2) for p in (cache / "ac").glob("*/*")],
        subprocess.run(["rm", "-rf", str(ws / "artifacts")], check=True)),
    "blobs deleted, artifacts gone": lambda ws, cache: (
        [b.unlink() for b in _blobs(cache)[::2]],
        subprocess.run(["rm", "-rf", str(ws / "artifacts")], check=True)),
    "digest cache garbage": lambda ws, cache: (
        ws / ".rules_keras/digests.json").write_text("[1, 2"),
    "doit's DB garbage": lambda ws, cache: (ws / ".rules_keras/doit.sqlite").write_bytes(b"x" * 99),
}


@pytest.fixture(scope="module")
def built_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("tamper")
    ws = new_workspace(base / "ws", FILES)
    result = doit(ws, "export", env={"RULES_KERAS_CACHE_DIR": str(base / "cache")})
    assert result.returncode == 0, result.stdout + result.stderr
    stop_servers()
    return ws, base / "cache"


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_tampering_is_repaired_and_never_published(
    tmp_path: Path, tampering: str, built_once: tuple[Path, Path],
    reference: dict[str, list[list[object]]],
) -> None:
    ws, cache = tmp_path / "ws", tmp_path / "cache"
    subprocess.run(["cp", "-a", str(built_once[0]), str(ws)], check=True)
    subprocess.run(["cp", "-a", str(built_once[1]), str(cache)], check=True)
    TAMPERINGS[tampering](ws, cache)
    outcome = _verify(ws, cache, reference)
    stop_servers()
    _record(f"tamper: {tampering}", outcome)
    assert outcome == "ok", f"{tampering}: {outcome}"


# -- a hostile remote cache -------------------------------------------------------------------

# The timeout each client uses: the drip mode must be cut at 2 x this.
HOSTILE_TIMEOUT = "2"
# No build against any mode may take longer than this (a dripping server once held one 330 s).
HOSTILE_MAX_SECONDS = 180


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_hostile_remote_never_gets_wrong_bytes_published_or_kept(
    tmp_path: Path, mode: str, built_once: tuple[Path, Path],
    reference: dict[str, list[list[object]]],
) -> None:
    """A fresh clone against a server serving `built_once`'s cache in the chosen hostile mode:
    the honest control restores everything; every lie builds locally, with a warning."""
    ws = new_workspace(tmp_path / "ws", FILES)
    cache = tmp_path / "cache"
    started = time.monotonic()
    with running_hostile(built_once[1], mode) as url:
        result = doit(ws, "export", env={"RULES_KERAS_CACHE_DIR": str(cache),
                                         "RULES_KERAS_REMOTE_CACHE": url,
                                         "RULES_KERAS_REMOTE_TIMEOUT": HOSTILE_TIMEOUT})
    elapsed = time.monotonic() - started
    honest = mode == "honest"
    if result.returncode != 0:
        outcome = "build failed"
    elif elapsed > HOSTILE_MAX_SECONDS:
        outcome = "too slow"
    elif counts(result)["restored"] != (TARGETS if honest else 0):
        outcome = "restored a lie" if not honest else "honest entries not restored"
    elif not honest and "warning: " not in result.stderr:
        outcome = "silent"
    else:
        outcome = _verify(ws, cache, reference)
    stop_servers()
    _record(f"hostile remote: {mode}", outcome)
    assert outcome == "ok", f"{mode}: {outcome} ({elapsed:.0f}s)\n{result.stdout}{result.stderr}"
