"""Shared fixtures: real temporary workspaces and the real `doit` command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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
# Every build starts its workspace's export server; in tests they exit soon
# when idle, and any still running are stopped when the session ends.
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

    Without the export server's folder: a clone has no server of its own yet,
    and copytree cannot copy a socket.
    """
    shutil.copytree(src, dest, symlinks=True, ignore=_server_folder)
    return dest


def _server_folder(folder: str, names: list[str]) -> list[str]:
    return ["server"] if Path(folder).name == ".rules_keras" else []


def stop_servers(under: Path) -> list[int]:
    """Stop the export servers of every workspace below `under`; returns their pids."""
    from rules.core.backends import BACKENDS
    from rules.execution.server import client as server_client
    from rules.execution.server.protocol import server_paths

    stopped = []
    for folder in under.glob("**/.rules_keras/server/"):
        for backend in BACKENDS:
            pid = server_client.stop(server_paths(folder.parent, backend, create=False))
            if pid is not None:
                stopped.append(pid)
    return stopped


@pytest.fixture(scope="session", autouse=True)
def export_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Short idle timeouts for the servers tests start, and none left behind."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RULES_KERAS_SERVER_IDLE_TIMEOUT", TEST_SERVER_IDLE_TIMEOUT)
        yield
    stop_servers(tmp_path_factory.getbasetemp())


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
