"""End to end: a parity check that cannot pass while testing nothing.

Real `doit` runs with real TensorFlow exports: a model whose fresh weights give
the same output for every input is warned about (and fails when strict), a
token StringLookup model is checked on in-vocabulary tokens, and sample_inputs
come from a function or a .npz file that is an input of the action.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import built_labels, counts, doit, new_workspace, read_manifests

pytestmark = pytest.mark.e2e

HEADER = "from rules import endpoint, keras_export, keras_model, keras_train, tensor_spec\n"
VOCAB = ["cat", "dog", "fish", "bird", "horse", "mouse"]

LIB = f'''
import keras

VOCAB = {VOCAB!r}


def batchnorm():
    """Fresh weights give the same output for every input: the BatchNormalization gamma
    starts at zero, as ResNet blocks initialise it, so everything after it is constant."""
    inp = keras.Input((4,), name="x")
    x = keras.layers.Dense(8)(inp)
    x = keras.layers.BatchNormalization(gamma_initializer="zeros")(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))


def tokens():
    """One token per element: a three-word phrase is always out of vocabulary here."""
    inp = keras.Input((3,), dtype="string", name="tokens")
    ids = keras.layers.StringLookup(vocabulary=VOCAB, name="lookup")(inp)
    x = keras.layers.Embedding(len(VOCAB) + 1, 4)(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(1)(x))


def dense():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Dense(2)(inp))


def keep(model):
    """keras_train: the weights as initialised (seeded)."""
'''

SAMPLES = '''
import numpy as np


def out_of_vocabulary():
    """What the old string samples were: every element out of vocabulary."""
    phrases = np.array([["the good movie"] * 3] * 2, dtype=object)
    return {"serve": [[phrases], [phrases]]}
'''

BUILD = HEADER + '''
for name, factory in [("bn", "batchnorm"), ("tok", "tokens"), ("dense", "dense")]:
    keras_train(name=name + "_w", factory="lib.model:" + factory, train="lib.model:keep")
    keras_model(name=name, factory="lib.model:" + factory, weights=":" + name + "_w")

keras_export(name="bn_serving", model=":bn")
keras_export(name="bn_strict", model=":bn", strict_verification=True)
keras_export(name="tok_serving", model=":tok")
keras_export(name="tok_oov", model=":tok", sample_inputs="lib.samples:out_of_vocabulary")
keras_export(name="dense_npz", model=":dense", sample_inputs="samples.npz")
keras_export(name="dense_onnx", model=":dense", format="onnx", sample_inputs="samples.npz")
'''


def _npz(rows: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    x = np.random.default_rng(seed).standard_normal((rows, 3, 4)).astype("float32")
    np.savez(buffer, serve=x)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = new_workspace(tmp_path_factory.mktemp("parity") / "ws", {
        "lib/__init__.py": "",
        "lib/model.py": LIB,
        "lib/samples.py": SAMPLES,
        "lib/BUILD.py": BUILD,
    })
    (root / "lib/samples.npz").write_bytes(_npz(5, 0))
    return root


@pytest.fixture(scope="module")
def run(ws: Path) -> subprocess.CompletedProcess[str]:
    return doit(ws, "--continue", "export")


def _check(ws: Path, label: str) -> dict[str, object]:
    record = read_manifests(ws)[label]["record"]
    (check,) = record["verification"]["checks"]  # type: ignore[index]
    return check  # type: ignore[no-any-return]


def test_a_constant_model_is_warned_about_and_fails_when_strict(
    ws: Path, run: subprocess.CompletedProcess[str]
) -> None:
    output = run.stdout + run.stderr
    assert counts(run)["failed"] == 1, output
    assert "//lib:bn_strict: the parity check proves little: endpoint 'serve' output 0 is " \
        "the same for every sample; give the target sample_inputs" in output
    assert not (ws / "artifacts/lib/bn_strict").exists()
    record = read_manifests(ws)["//lib:bn_serving"]["record"]
    verification = record["verification"]  # type: ignore[index]
    assert verification["passed"] is True and verification["vacuous"] is True
    (check,) = verification["checks"]
    assert check["samples"] == 4 and check["vacuous"] is True
    (output0,) = check["outputs"]
    assert output0["spread"] == 0.0 and output0["max_abs_diff"] == 0.0
    assert output0["why"] == "is the same for every sample"
    (warning,) = record["warnings"]  # type: ignore[index]
    assert warning.startswith("//lib:bn_serving: the parity check proves little: endpoint "
                              "'serve' output 0 is the same for every sample; give the target "
                              "sample_inputs")
    assert f"rules_keras: warning: {warning}" in run.stderr  # printed once, as it was built


def test_the_strict_setting_applies_to_every_target_and_enters_the_key(
    ws: Path, run: subprocess.CompletedProcess[str]
) -> None:
    strict = doit(ws, "//lib:bn_serving", env={"RULES_KERAS_STRICT_VERIFICATION": "1"})
    assert strict.returncode != 0
    assert "//lib:bn_serving: the parity check proves little" in strict.stdout + strict.stderr


def test_token_lookup_samples_are_in_vocabulary(
    ws: Path, run: subprocess.CompletedProcess[str]
) -> None:
    """Generated tokens exercise the embedding rows of real tokens: the outputs vary. The
    same model checked on out-of-vocabulary phrases (the old samples) is vacuous."""
    check = _check(ws, "//lib:tok_serving")
    assert check["source"] == "generated, drawn from the vocabulary of 'lookup'"
    (output0,) = check["outputs"]  # type: ignore[attr-defined]
    assert output0["spread"] > 1e-3 and not output0["vacuous"]
    assert check["max_abs_diff"] <= 1e-5  # type: ignore[operator]
    oov = _check(ws, "//lib:tok_oov")
    assert oov["source"] == "sample_inputs lib.samples:out_of_vocabulary"
    assert oov["samples"] == 2 and oov["vacuous"] is True
    (oov0,) = oov["outputs"]  # type: ignore[attr-defined]
    assert oov0["spread"] == 0.0
    warnings = read_manifests(ws)["//lib:tok_oov"]["record"]["warnings"]  # type: ignore[index]
    assert "//lib:tok_oov: the parity check proves little" in warnings[0]


def test_sample_inputs_from_a_npz_file_in_both_kinds_of_format(
    ws: Path, run: subprocess.CompletedProcess[str]
) -> None:
    for label in ("//lib:dense_npz", "//lib:dense_onnx"):
        check = _check(ws, label)
        assert check["source"] == "sample_inputs lib/samples.npz", label
        assert check["samples"] == 5 and check["vacuous"] is False
        assert "lib/samples.npz" in read_manifests(ws)[label]["inputs"]["files"]  # type: ignore[index]
    fn_inputs = read_manifests(ws)["//lib:tok_oov"]["inputs"]
    assert "lib/samples.py" in fn_inputs["code"]  # type: ignore[index]


def test_editing_the_npz_file_rebuilds_its_targets(
    ws: Path, run: subprocess.CompletedProcess[str]
) -> None:
    (ws / "lib/samples.npz").write_bytes(_npz(3, 1))
    result = doit(ws, "-v", "2", "--continue", "export")
    assert built_labels(result) == {"//lib:dense_npz", "//lib:dense_onnx"}, result.stdout
    assert "lib/samples.npz" in result.stdout
    assert _check(ws, "//lib:dense_npz")["samples"] == 3
