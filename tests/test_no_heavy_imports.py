"""Loading, analysis and up-to-date checks never import TensorFlow, Keras or JAX.

Each check runs in a fresh interpreter: the test process itself may already
have imported Keras for another test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "jax")

SCRIPT = textwrap.dedent(
    """\
    import json
    import sys
    from pathlib import Path

    from rules.analysis.action_key import code_modules
    from rules.analysis.graph import analyse
    from rules.build import BuildSession
    from rules.loading.build_files import load_workspace

    root, heavy_names = Path(sys.argv[1]), set(sys.argv[2].split(","))
    graph = analyse(root, load_workspace(root))
    assert graph.failures == (), graph.failures

    # First as a fresh checkout: exports of trained models lack their weights.
    session = BuildSession(root)
    fresh = {str(a.label): session.is_up_to_date(a.label) for a in session.graph.actions}
    session.close()

    # Then with every keras_train output present, so every export key is computed in full.
    for action in graph.actions:
        if action.kind == "keras_train":
            out = root / action.output
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b"placeholder weights")
    session = BuildSession(root)
    keys = {}
    closures = {}
    for action in session.graph.actions:
        keys[str(action.label)] = session.key(action).digest
        closures[str(action.label)] = session.scanner.closure(code_modules(action)).files
        assert not session.is_up_to_date(action.label)
    session.close()

    import rules

    tasks = [t["basename"] for t in rules.Workspace(root).create_doit_tasks()]
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in heavy_names)
    files = {label: [path for path, _ in found] for label, found in closures.items()}
    report = {"fresh": fresh, "keys": keys, "tasks": tasks, "heavy": heavy, "closures": files}
    print(json.dumps(report))
    """
)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the example workspace, without artifacts/ and build state."""
    root = tmp_path / "ws"
    ignore = shutil.ignore_patterns("__pycache__", "artifacts", ".rules_keras", "*.pyc")
    shutil.copytree(REPO / "models", root / "models", ignore=ignore)
    for name in ("dodo.py", "pyproject.toml"):
        shutil.copy2(REPO / name, root / name)
    return root


def test_analysis_and_uptodate_checks_import_no_backend(workspace: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_", "RULES_KERAS_"))}
    # A session opens the local cache: keep it beside the copy, away from the user's.
    env["RULES_KERAS_CACHE_DIR"] = str(workspace.parent / "cache")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(workspace), ",".join(HEAVY)],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"analysis imported {report['heavy']}"
    assert len(report["keys"]) >= 9 and report["keys"].keys() == report["fresh"].keys()
    assert not any(report["fresh"].values())
    assert "//models/mnist:mnist_serving" in report["tasks"] and "export" in report["tasks"]
    assert "models/common/layers.py" in report["closures"]["//models/tagger:tagger_serving"]
    assert (workspace / ".rules_keras").is_dir()
    assert not (REPO / "models" / ".rules_keras").exists()


LAZY_HTTP = textwrap.dedent(
    """\
    import sys

    import rules.cache.tiers
    from rules.cache.remote import RemoteCache, RemoteUnavailable
    from rules.cache.remote_config import RemoteConfig

    def loaded():
        return sorted(m for m in ("urllib3", "http.client", "ssl") if m in sys.modules)

    cache = RemoteCache(RemoteConfig("http://127.0.0.1:9", timeout=2))
    before = loaded()
    try:
        cache.get_ac("0" * 64)
    except RemoteUnavailable:
        pass
    print(before, loaded())
    """
)


def test_http_remote_imports_urllib3_on_its_first_request_only() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAZY_HTTP], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("]")[0] == "[", f"imported before any request: {result.stdout}"
    assert "urllib3" in result.stdout.split("]")[1]
