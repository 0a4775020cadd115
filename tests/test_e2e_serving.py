"""End to end: the real `doit export` publishes the examples into a TF Serving tree."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import built_labels, copy_workspace, doit, summary

pytestmark = pytest.mark.e2e

PERTURB = r"""
import sys
sys.path.insert(0, ".")
from models.ranker.model import build_model
m = build_model(); m.load_weights("models/ranker/ranker.weights.h5")
v = m.trainable_variables[0]; v.assign(v + 0.01)
m.save_weights("models/ranker/ranker.weights.h5")
"""


def _versions(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if not p.name.startswith("."))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _config_names(tree: Path) -> list[str]:
    text = (tree / "models.config").read_text()
    assert text.startswith("model_config_list {")
    return [line.split('"')[1] for line in text.splitlines() if line.strip().startswith("name:")]


def test_serving_tree_gets_a_new_version_only_when_the_weights_change(
    built_examples: Path, tmp_path: Path
) -> None:
    ws = copy_workspace(built_examples, tmp_path / "ws")
    (ws / "pyproject.toml").write_text('[tool.rules_keras]\nserving_root = "serving"\n')
    tree = ws / "serving"

    first = doit(ws, "export")
    assert first.returncode == 0, first.stdout + first.stderr
    # Nothing to rebuild: the artifacts only have to be published.
    assert summary(first) == "0 built, 0 restored, 12 up to date, 0 failed"
    assert "starting a" not in first.stderr
    assert _versions(tree / "mnist") == ["1"] and _versions(tree / "ranker") == ["1"]
    assert _config_names(tree) == ["mnist", "ranker"]
    artifact = ws / "artifacts/models/ranker/ranker_serving"
    assert _digests(tree / "ranker/1") == _digests(artifact)
    version_1 = _digests(tree / "ranker/1")

    subprocess.run([sys.executable, "-c", PERTURB], cwd=ws, check=True, timeout=300)
    second = doit(ws, "-v", "2", "export")
    assert second.returncode == 0, second.stdout + second.stderr
    assert built_labels(second) == {"//models/ranker:ranker_serving"}
    assert "serving 'ranker' version 2" in second.stdout
    assert _versions(tree / "ranker") == ["1", "2"]
    assert _versions(tree / "mnist") == ["1"]
    assert _digests(tree / "ranker/2") == _digests(artifact) != version_1
    assert _digests(tree / "ranker/1") == version_1
    assert _config_names(tree) == ["mnist", "ranker"]

    third = doit(ws, "export")
    assert summary(third) == "0 built, 0 restored, 12 up to date, 0 failed"
    assert _versions(tree / "ranker") == ["1", "2"]

    # The saved_model_cli TF Serving users reach for reads the served version.
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(tree / "ranker/2")],
        capture_output=True, text=True, timeout=600,
    )
    assert shown.returncode == 0, shown.stderr
    assert "signature_def['serving_default']" in shown.stdout


def test_a_restore_from_the_cache_is_published_too(built_examples: Path, tmp_path: Path) -> None:
    ws = copy_workspace(built_examples, tmp_path / "ws")
    (ws / "pyproject.toml").write_text(
        '[tool.rules_keras]\nserving_root = "deploy/tf"\nserving_keep = 1\n'
    )
    shutil.rmtree(ws / "artifacts/models/mnist/mnist_serving")
    # The shared fixture's cache holds every example: point this copy at it.
    cache = built_examples.parent / f"{built_examples.name}-cache"
    result = doit(ws, "export", env={"RULES_KERAS_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == "0 built, 1 restored, 11 up to date, 0 failed"
    assert "mnist_serving from the local cache" in result.stdout
    tree = ws / "deploy/tf"
    assert _versions(tree / "mnist") == ["1"] and _versions(tree / "ranker") == ["1"]
    assert _digests(tree / "mnist/1") == _digests(ws / "artifacts/models/mnist/mnist_serving")
    assert f'base_path: "{(tree / "mnist").resolve()}"' in (tree / "models.config").read_text()
