"""End to end: every kind of bad input gets an error naming its target, and nothing half-built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_MODELS, built_labels, doit, new_workspace, summary

pytestmark = pytest.mark.e2e

RAISE = '    raise ValueError("boom from the factory")'
LIB = TINY_MODELS + '''

def raises():
    raise ValueError("boom from the factory")

def fit(model):
    import numpy as np
    x = np.random.RandomState(0).randn(16, 4).astype("float32")
    y = model(x).numpy() * 0
    model.compile("sgd", "mse")
    model.fit(x, y, epochs=1, verbose=0)

def counting(model):
    # A Python side effect: traced once into the SavedModel, but run on every
    # eager call, so the artifact and Keras disagree.
    calls = {"n": 0}
    def fn(x):
        calls["n"] += 1
        return model(x) + float(calls["n"])
    return fn
'''

HEADER = "from rules import endpoint, keras_export, keras_model, keras_train, tensor_spec\n"
SPEC = "[tensor_spec((None, 4))]"

FILES = {
    "lib/__init__.py": "",
    "lib/model.py": LIB,
    "good/BUILD.py": HEADER + (
        'keras_train(name="w", factory="lib.model:small", train="lib.model:fit")\n'
        'keras_model(name="m", factory="lib.model:small", weights=":w")\n'
        'keras_export(name="good", model=":m")\n'
    ),
    "syntax/BUILD.py": HEADER + "\nkeras_model(name='m',, factory='x:y')\n",
    "attrs/BUILD.py": HEADER + (
        'keras_export(name="typo", model="//good:m", formt="tf_saved_model")\n'
        'keras_model(name="wrongtype", factory="lib.model:small", weights="//good:w",\n'
        '            data="v.txt")\n'
    ),
    "dup/BUILD.py": HEADER + (
        'keras_model(name="m", factory="lib.model:small", weights="//good:w")\n'
        'keras_model(name="m", factory="lib.model:other", weights="//good:w")\n'
        'keras_export(name="e", model=":m")\n'
    ),
    "missing/BUILD.py": HEADER + (
        'keras_model(name="mnist", factory="lib.model:small", weights="//good:w")\n'
        'keras_export(name="e", model=":mnsit")\n'
    ),
    "cycle/BUILD.py": HEADER + (
        'keras_train(name="a", factory="lib.model:small", train="lib.model:fit", weights=":b")\n'
        'keras_train(name="b", factory="lib.model:small", train="lib.model:fit", weights=":a")\n'
    ),
    "noweights/BUILD.py": HEADER + (
        'keras_model(name="m", factory="lib.model:small", weights="nope.weights.h5")\n'
        'keras_export(name="e", model=":m")\n'
    ),
    "fmt/BUILD.py": HEADER + 'keras_export(name="e", model="//good:m", format="tf_savedmodel")\n',
    "clash/BUILD.py": HEADER + (
        'keras_export(name="one", model="//good:m", out="same")\n'
        'keras_export(name="two", model="//good:m", out="same")\n'
    ),
    "wrongweights/BUILD.py": HEADER + (
        'keras_train(name="other_w", factory="lib.model:other", train="lib.model:fit")\n'
        'keras_model(name="m", factory="lib.model:small", weights=":other_w")\n'
        'keras_export(name="e", model=":m")\n'
    ),
    "lib/broken.py": "def small(:\n",
    "brokencode/BUILD.py": HEADER + (
        'keras_model(name="m", factory="lib.broken:small", weights="//good:w")\n'
        'keras_export(name="e", model=":m")\n'
    ),
    "noimport/BUILD.py": HEADER + (
        'keras_model(name="m", factory="lib.nope:small", weights="//good:w")\n'
        'keras_export(name="e", model=":m")\n'
    ),
    "raises/BUILD.py": HEADER + (
        'keras_model(name="m", factory="lib.model:raises", weights="//good:w")\n'
        'keras_export(name="e", model=":m")\n'
    ),
    "badsig/BUILD.py": HEADER + (
        'keras_export(name="e", model="//good:m",\n'
        '    endpoints=[endpoint("serve", inputs=[tensor_spec((None, 5))])])\n'
    ),
    "mismatch/BUILD.py": HEADER + (
        'keras_export(name="e", model="//good:m",\n'
        f'    endpoints=[endpoint("serve", fn="lib.model:counting", inputs={SPEC})])\n'
    ),
}

EXPECTED_ERRORS = {
    "syntax": "syntax/BUILD.py:3: syntax error",
    "typo": "//attrs:typo: keras_export() got unknown attribute 'formt'. Did you mean 'format'?",
    "wrongtype": "//attrs:wrongtype: attribute 'data' must be a list of paths",
    "dup": "//dup:m: target name 'm' is declared twice, at dup/BUILD.py:2 and dup/BUILD.py:3",
    "dup-dependent": "//dup:e: attribute 'model': //dup:m has errors",
    "missing": "//missing:e: attribute 'model': no target 'mnsit' in package 'missing'. "
    "Did you mean 'mnist'?",
    "cycle": "dependency cycle: //cycle:a -> //cycle:b -> //cycle:a",
    # At the keras_model's line, where `weights` is set, not the export's.
    "noweights": "//noweights:e: //noweights:m: attribute 'weights': file "
    "noweights/nope.weights.h5 does not exist (declared at noweights/BUILD.py:2)",
    "fmt": "//fmt:e: unknown format 'tf_savedmodel'",
    "fmt-hint": "Did you mean 'tf_saved_model'?",
    "clash": "targets //clash:one, //clash:two write the same artifact path artifacts/clash/same",
    "wrongweights": "//wrongweights:e: weights artifacts/wrongweights/other_w.weights.h5 do not "
    "fit the model built by 'lib.model:small': variable dense/kernel has shape (4, 2) in the "
    "model but (4, 3) in the file",
    "noimport": "//noimport:e: factory 'lib.nope:small' could not be imported: "
    "ModuleNotFoundError",
    "brokencode": "//brokencode:e: factory 'lib.broken:small' could not be imported: "
    "SyntaxError",
    "raises": "//raises:e: factory 'lib.model:raises' raised ValueError: boom from the factory",
    "raises-traceback": f'lib/model.py", line {LIB.splitlines().index(RAISE) + 1}, in raises',
    "badsig": "//badsig:e: endpoint 'serve': the input signature does not fit the model: "
    "ValueError: Input 0 with name 'x' of layer 'functional' is incompatible with the layer: "
    "expected shape=(None, 4), found shape=(None, 5)",
    "mismatch": "//mismatch:e: endpoint 'serve' of the reloaded SavedModel differs from Keras: "
    "max abs diff",
}


@pytest.fixture(scope="module")
def bad_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    ws = new_workspace(tmp_path_factory.mktemp("bad") / "ws", FILES)
    return ws, doit(ws, "--continue", "export")


def test_each_bad_input_is_reported_with_its_label_and_cause(
    bad_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    _, result = bad_run
    output = result.stdout + result.stderr
    assert result.returncode != 0
    missing = {k: v for k, v in EXPECTED_ERRORS.items() if v not in output}
    assert not missing, f"messages not found: {missing}\n--- output ---\n{output}"


def test_independent_targets_still_build_with_continue(
    bad_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    ws, result = bad_run
    assert built_labels(result) == {"//good:w", "//good:good", "//wrongweights:other_w"}
    assert (ws / "artifacts/good/good/saved_model.pb").is_file()
    assert summary(result).startswith("3 built, 0 restored, 0 up to date, ")


def test_failed_targets_leave_no_partial_artifact(
    bad_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    ws, _ = bad_run
    artifacts = ws / "artifacts"
    produced = sorted(p.relative_to(artifacts).as_posix() for p in artifacts.rglob("*"))
    hidden = [p for p in produced if any(part.startswith(".") for part in p.split("/"))]
    assert hidden == [], "staging leftovers"
    for failed in ("wrongweights/e", "raises/e", "badsig/e", "mismatch/e", "noimport/e"):
        assert failed not in produced
        assert f"{failed}.manifest.json" not in produced


def test_without_continue_the_build_stops_at_the_first_error(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path / "ws", FILES)
    result = doit(ws, "export")
    assert result.returncode != 0
    # Load and analysis errors are scheduled first, so nothing is exported.
    assert EXPECTED_ERRORS["syntax"] in result.stdout + result.stderr
    assert built_labels(result) == set()
    assert "starting a" not in result.stderr


def test_missing_backend_gives_an_install_hint(tmp_path: Path) -> None:
    """A real virtualenv with rules_keras and doit but no Keras or TensorFlow."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    # The base install, no extras: exactly what a user gets before choosing a backend.
    subprocess.run([python, "-m", "pip", "install", "-q", "-e", str(REPO)], check=True, timeout=600)
    files = {k: v for k, v in FILES.items() if k.startswith(("lib", "good"))}
    ws = new_workspace(tmp_path / "ws", files)
    listing = doit(ws, "list", python=python)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "//good:good" in listing.stdout
    result = doit(ws, "--continue", "export", python=python)
    assert result.returncode != 0
    assert (
        "//good:w: backend 'tensorflow' needs keras, tensorflow, which is not installed; "
        "pip install 'rules-keras[tensorflow]'"
    ) in result.stdout + result.stderr
