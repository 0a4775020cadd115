"""Root cause first: when a converter cannot convert an op, the failure leads with the
converter's own words and the known remedy, then the runtime's complaint (real doit, ONNX)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import built_labels, doit, new_workspace, summary

pytestmark = pytest.mark.e2e

HEADER = "from rules import keras_export, keras_model, keras_train\n"
LIB = '''
import keras


def exact():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Dense(3, activation="gelu")(inp))


def approximate():
    inp = keras.Input((4,), name="x")
    dense = keras.layers.Dense(3)(inp)
    return keras.Model(inp, keras.activations.gelu(dense, approximate=True))


def fit(model):
    return None
'''
FILES = {
    "lib/__init__.py": "",
    "lib/model.py": LIB,
    "m/BUILD.py": HEADER + "".join(
        f'keras_train(name="{n}_w", factory="lib.model:{n}", train="lib.model:fit")\n'
        f'keras_model(name="{n}", factory="lib.model:{n}", weights=":{n}_w")\n'
        f'keras_export(name="{n}_onnx", model=":{n}", format="onnx")\n'
        for n in ("exact", "approximate")),
}


def test_an_unsupported_op_is_reported_by_the_converter_first(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path / "ws", FILES)
    result = doit(ws, "--continue", "export")
    assert summary(result) == "3 built, 0 restored, 0 up to date, 1 failed", result.stdout
    assert "//m:approximate_onnx" in built_labels(result)  # the remedy works
    headline = next(line for line in result.stdout.splitlines()
                    if line.strip().startswith("//m:exact_onnx: "))
    assert re.search(r"//m:exact_onnx: the onnx converter reported: "
                     r"Unsupported ops: Counter\(\{'Erfc': \d+\}\) "
                     r"\(the exact gelu lowers to Erfc: use gelu with approximate=True", headline)
    # The runtime's complaint follows the converter's, in the same headline.
    assert headline.index("Unsupported ops") < headline.index("No Op registered")
    # tf2onnx's lines are still in the target's log.
    log = (ws / ".rules_keras/logs/m/exact_onnx.log").read_text()
    assert "Unsupported ops" in log
