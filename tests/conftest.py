"""Shared fixtures: real temporary workspaces and the real `doit` command."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from rules.reporter import parse_summary, summary_line

REPO = Path(__file__).resolve().parents[1]
# The example workspace (models/): 8 exports and the 4 keras_train targets they need.
EXAMPLE_TARGETS = 12
# Two tiny functional models, for test workspaces that need real, fast exports.
TINY_MODELS = '''
import keras


def small():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Dense(2)(inp))


def other():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Dense(3)(inp))
'''
DOIT_TIMEOUT = 900
# A target's line in the build's progress (rules.progress.Finished.line).
BUILT_LINE = re.compile(r"^\[ *\d+/\d+\] built (//\S+)", re.M)
# Every build starts its environment's export server; in tests they exit soon
# when idle, and any still running are stopped when their test (or module,
# or session, for the fixtures that build) ends.
TEST_SERVER_IDLE_TIMEOUT = "60"


def write_tree(root: Path, files: Mapping[str, str]) -> None:
    """Write `files` (relative path -> text) under root, creating folders."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def new_workspace(root: Path, files: Mapping[str, str] | None = None) -> Path:
    """A workspace: our dodo.py plus the given files."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    write_tree(root, files or {})
    return root


def copy_examples(dest: Path) -> Path:
    """A copy of the repository's example workspace (models/, dodo.py), without artifacts."""
    new_workspace(dest)
    shutil.copytree(
        REPO / "models", dest / "models", ignore=shutil.ignore_patterns("__pycache__")
    )
    return dest


def copy_workspace(src: Path, dest: Path) -> Path:
    """A full copy (artifacts and state included), as a second clone would have after a build.

    The export servers' sockets are not in it: they live in a runtime folder
    shared by every workspace of the environment (rules.execution.server.runtime).
    """
    shutil.copytree(src, dest, symlinks=True)
    return dest


def stop_servers(folder: Path | None = None) -> list[int]:
    """Stop the export servers in `folder` (default: the current test's runtime folder).

    Servers are shared per Python environment from a runtime folder outside
    the workspaces, and every test (module, session) has one of its own
    (private_runtime_dir), so this stops exactly the ones the test started.
    """
    from rules.execution.server import client as server_client
    from rules.execution.server.runtime import runtime_dir, servers_in

    folder = folder or runtime_dir()
    stopped = []
    for paths in servers_in(folder) if folder.is_dir() else []:
        pid = server_client.stop(paths)
        if pid is not None:
            stopped.append(pid)
    return stopped


@contextlib.contextmanager
def private_runtime_dir(patch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A runtime folder of our own for the export servers started inside; stopped and removed
    at the end, so tests never share (or leak) servers, nor meet the user's own."""
    from rules.execution.server.runtime import RUNTIME_DIR_ENV

    # Short and under /tmp: sockets in it must fit sockaddr_un (about 100 bytes).
    folder = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))
    patch.setenv(RUNTIME_DIR_ENV, str(folder))
    try:
        yield folder
    finally:
        stop_servers(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def export_servers() -> Iterator[None]:
    """Short idle timeouts, and a runtime folder for the servers of session fixtures' builds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RULES_KERAS_SERVER_IDLE_TIMEOUT", TEST_SERVER_IDLE_TIMEOUT)
        with private_runtime_dir(patch):
            yield


@pytest.fixture(scope="module", autouse=True)
def module_export_servers() -> Iterator[Path]:
    """The servers of a module's fixtures' builds, stopped when the module ends."""
    with pytest.MonkeyPatch.context() as patch, private_runtime_dir(patch) as folder:
        yield folder


@pytest.fixture(autouse=True)
def test_export_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test's own servers: a test that wants two workspaces to share one builds both
    inside it."""
    with private_runtime_dir(monkeypatch) as folder:
        yield folder


def server_info(backend: str = "tensorflow") -> dict[str, object] | None:
    """The info file of this environment's `backend` server in the test's runtime folder."""
    from rules.execution.server.protocol import read_info
    from rules.execution.server.runtime import shared_paths

    return read_info(shared_paths(backend, create=False))


def doit(
    workspace: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
) -> subprocess.CompletedProcess[str]:
    """Run the real `doit` in `workspace`; returns the completed process (never raises)."""
    full_env = dict(os.environ)
    full_env.pop("PYTHONPROFILEIMPORTTIME", None)
    # Each workspace gets its own cache beside it unless a test shares one on
    # purpose: the user's real cache must never leak into (or out of) a test.
    full_env["RULES_KERAS_CACHE_DIR"] = str(workspace.parent / f"{workspace.name}-cache")
    full_env.update(env or {})
    return subprocess.run(
        [python, "-m", "doit", *args],
        cwd=workspace,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=DOIT_TIMEOUT,
    )


def counts(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The counts of `doit export`'s summary line, parsed as CI scripts parse it."""
    found = parse_summary(result.stdout)
    assert found is not None, f"no summary line in output:\n{result.stdout}\n{result.stderr}"
    return found


def summary(result: subprocess.CompletedProcess[str]) -> str:
    """The final counts line of `doit export`."""
    return summary_line(Counter(counts(result)))


def read_manifests(ws: Path) -> dict[str, dict[str, object]]:
    """Every manifest under artifacts/, by label, with its path."""
    import json

    found = {}
    for path in (ws / "artifacts").rglob("*.manifest.json"):
        data = json.loads(path.read_text())
        found[data["label"]] = {"path": str(path), **data}
    return found


def built_labels(result: subprocess.CompletedProcess[str]) -> set[str]:
    """Labels the build reported as built (its `[n/N] built //pkg:name (...)` lines)."""
    return set(BUILT_LINE.findall(result.stdout))


@pytest.fixture(scope="session")
def built_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example workspace after one real `doit -n 2 export` (shared, never modified)."""
    ws = copy_examples(tmp_path_factory.mktemp("examples") / "ws")
    result = doit(ws, "-n", "2", "export")
    assert result.returncode == 0, result.stdout + result.stderr
    return ws


LOAD_SCRIPT = r"""
import sys
import tensorflow as tf
for path in sys.argv[1:]:
    loaded = tf.saved_model.load(path)
    assert loaded.signatures, path
print("loaded", len(sys.argv) - 1)
"""


def assert_artifacts_consistent(ws: Path, *, load: bool = True) -> int:
    """Every manifest matches its artifact byte for byte, nothing half-written is visible,
    and (with `load`) every SavedModel loads in a fresh TensorFlow process. Returns the count."""
    import hashlib
    import json

    artifacts = ws / "artifacts"
    hidden = [p for p in artifacts.rglob(".*")]
    assert hidden == [], f"leftovers visible in artifacts/: {hidden}"
    saved_models = []
    manifests = sorted(artifacts.rglob("*.manifest.json"))
    for mpath in manifests:
        data = json.loads(mpath.read_text())
        art = mpath.with_name(mpath.name[: -len(".manifest.json")])
        for rel, sha, size, _mode in data["files"]:
            path = art if data["artifact_kind"] == "file" else art / rel
            assert path.stat().st_size == size, path
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, path
        if data["artifact_kind"] == "directory":
            saved_models.append(str(art))
    if load and saved_models:
        result = subprocess.run(
            [sys.executable, "-c", LOAD_SCRIPT, *saved_models],
            capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stderr
    return len(manifests)


def assert_cache_consistent(cache: Path) -> int:
    """Every action result decodes, names its own key, and every blob it names exists with the
    right content."""
    import hashlib

    from rules.cache.records import ActionResult

    entries = 0
    for ac in (cache / "ac").glob("*/*"):
        if ac.name.startswith(".tmp-"):
            continue
        result = ActionResult.from_reapi(ac.read_bytes())
        assert result.key == ac.name, f"{ac} answers another action ({result.key})"
        for entry in result.files:
            blob = cache / "cas" / entry.sha256[:2] / entry.sha256
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == entry.sha256, blob
        entries += 1
    return entries
