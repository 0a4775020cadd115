"""End to end: the real `doit export` on a copy of the example models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import built_labels, copy_workspace, doit, read_manifests, summary

pytestmark = pytest.mark.e2e

EXPORTS = {
    "//models/mnist:mnist_serving",
    "//models/ranker:ranker_serving",
    "//models/sentiment:sentiment_serving",
    "//models/jax_regressor:jax_regressor_serving",
    "//models/tagger:tagger_serving",
}

# Loads every SavedModel in a fresh interpreter and compares `serve` with the
# Keras model rebuilt from its factory and weights, on the backend of the model.
CHECK_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
root = Path(sys.argv[1]); manifests = json.loads(sys.argv[2])
sys.path.insert(0, str(root))
import keras, tensorflow as tf
from rules.core.specs import tree_from_json
from rules.execution.verify import sample, max_abs_diff
for mpath in manifests:
    m = json.loads(Path(mpath).read_text())
    art = Path(mpath[: -len(".manifest.json")])
    loaded = tf.saved_model.load(str(art))
    module, fn = m["inputs"]["attrs"]["factory"].split(":")
    model = getattr(__import__(module, fromlist=[fn]), fn)()
    weights = [p for p in m["inputs"]["files"] if p.endswith((".weights.h5", ".keras"))]
    model.load_weights(str(root / weights[0]))
    ep = next(e for e in m["record"]["endpoints"] if e["name"] == "serve")
    args = [sample(tree_from_json(t), np.random.default_rng(7)) for t in ep["inputs"]]
    diff = max_abs_diff(model(*args, training=False), loaded.serve(*args))
    assert diff < 1e-4, (m["label"], diff)
    assert "serving_default" in loaded.signatures, m["label"]
    print("OK", m["label"], diff)
"""


def test_every_export_loads_in_a_fresh_process_and_serves_keras_outputs(
    built_examples: Path,
) -> None:
    manifests = read_manifests(built_examples)
    assert set(manifests) >= EXPORTS
    for backend in ("tensorflow", "jax"):
        paths = [
            str(m["path"])
            for label, m in manifests.items()
            if label in EXPORTS and m["inputs"]["backend"] == backend  # type: ignore[index]
        ]
        result = subprocess.run(
            [sys.executable, "-c", CHECK_SCRIPT, str(built_examples), json.dumps(paths)],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, "KERAS_BACKEND": backend},
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("OK ") == len(paths)


def test_manifest_records_endpoints_signatures_and_check(built_examples: Path) -> None:
    ranker = read_manifests(built_examples)["//models/ranker:ranker_serving"]
    record = ranker["record"]
    names = [e["name"] for e in record["endpoints"]]  # type: ignore[index]
    assert names == ["serve", "serve_training"]
    assert record["verification"]["passed"] is True  # type: ignore[index]
    checks = record["verification"]["checks"]  # type: ignore[index]
    assert all(c["max_abs_diff"] <= 1e-5 for c in checks)
    assert record["variable_collections"] == [["trainable", "trainable_variables"]]  # type: ignore[index]
    assert (built_examples / "artifacts/models/ranker/ranker_serving/saved_model.pb").is_file()


def test_second_run_builds_nothing_and_imports_no_tensorflow(
    built_examples: Path, tmp_path: Path
) -> None:
    ws = copy_workspace(built_examples, tmp_path / "ws")
    # A copy has new inodes and paths: the first run re-hashes but must not build.
    first = doit(ws, "export")
    assert first.returncode == 0, first.stdout + first.stderr
    assert summary(first).startswith("0 built, 0 restored, 12 up to date, 0 failed")
    # PYTHONPROFILEIMPORTTIME is inherited by workers, so a started worker shows too.
    second = doit(ws, "export", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert second.returncode == 0, second.stdout + second.stderr
    assert summary(second) == "0 built, 0 restored, 12 up to date, 0 failed"
    imported = [line for line in second.stderr.splitlines() if "import time:" in line]
    assert imported, "PYTHONPROFILEIMPORTTIME produced no output"
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in imported}
    assert not modules & {"tensorflow", "keras", "jax", "jaxlib"}
    assert "starting a" not in second.stderr


PERTURB = r"""
import sys
sys.path.insert(0, ".")
from models.ranker.model import build_model
m = build_model(); m.load_weights("models/ranker/ranker.weights.h5")
v = m.trainable_variables[0]; v.assign(v + 0.01)
m.save_weights("models/ranker/ranker.weights.h5")
"""


def test_changing_one_weights_file_rebuilds_exactly_one_target_and_says_why(
    built_examples: Path, tmp_path: Path
) -> None:
    ws = copy_workspace(built_examples, tmp_path / "ws")
    weights = ws / "models/ranker/ranker.weights.h5"
    before = __import__("hashlib").sha256(weights.read_bytes()).hexdigest()
    subprocess.run([sys.executable, "-c", PERTURB], cwd=ws, check=True, timeout=300)
    after = __import__("hashlib").sha256(weights.read_bytes()).hexdigest()
    assert before != after
    result = doit(ws, "-v", "2", "export")  # -v 2: each target's reasons
    assert result.returncode == 0, result.stdout + result.stderr
    assert built_labels(result) == {"//models/ranker:ranker_serving"}
    assert summary(result) == "1 built, 0 restored, 11 up to date, 0 failed"
    assert f"models/ranker/ranker.weights.h5: {before[:12]} -> {after[:12]}" in result.stdout


def test_editing_shared_code_rebuilds_exactly_its_dependents(
    built_examples: Path, tmp_path: Path
) -> None:
    ws = copy_workspace(built_examples, tmp_path / "ws")
    layers = ws / "models/common/layers.py"
    layers.write_text(layers.read_text() + "\n# a comment still changes the code digest\n")
    result = doit(ws, "-v", "2", "export")
    assert result.returncode == 0, result.stdout + result.stderr
    tagger = {"//models/tagger:tagger_weights", "//models/tagger:tagger_serving"}
    assert built_labels(result) == tagger
    assert "models/common/layers.py:" in result.stdout


def test_list_single_target_and_clean(built_examples: Path, tmp_path: Path) -> None:
    ws = copy_workspace(built_examples, tmp_path / "ws")
    listing = doit(ws, "list")
    assert listing.returncode == 0, listing.stderr
    for label in EXPORTS:
        assert label in listing.stdout
    assert "SavedModel of the CNN" in listing.stdout  # the target's doc

    cleaned = doit(ws, "clean", "//models/mnist:mnist_serving")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert not (ws / "artifacts/models/mnist/mnist_serving").exists()
    assert not (ws / "artifacts/models/mnist/mnist_serving.manifest.json").exists()

    one = doit(ws, "//models/mnist:mnist_serving")
    assert one.returncode == 0, one.stdout + one.stderr
    assert built_labels(one) == {"//models/mnist:mnist_serving"}
    assert (ws / "artifacts/models/mnist/mnist_serving/saved_model.pb").is_file()
