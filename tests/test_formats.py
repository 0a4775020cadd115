"""Tests for rules.core.formats and the format attributes of keras_export."""

from __future__ import annotations

from pathlib import Path

import pytest
from workspace_helpers import action_labels, failures, graph, load, model_package

from rules.analysis.action_key import attributes
from rules.core.formats import EXPORT_FORMATS
from rules.loading.targets import BrokenTarget, ExportTarget, Target

MODEL = 'keras_model(name="model", factory="m.model:build", weights="w.weights.h5")\n'
JAX_MODEL = (
    'keras_model(name="jmodel", factory="m.model:build", weights=":w", backend="jax")\n'
)


def _target(tmp_path: Path, body: str, name: str = "x") -> Target:
    package = load(tmp_path, "m", MODEL + body)
    assert package.error is None, package.error
    return next(t for t in package.targets if t.label.name == name)


def _broken(tmp_path: Path, body: str) -> str:
    target = _target(tmp_path, body)
    assert isinstance(target, BrokenTarget), target
    return target.message


def test_formats_follow_what_keras_exports_from_each_backend() -> None:
    assert {name: f.backends for name, f in EXPORT_FORMATS.items()} == {
        "tf_saved_model": ("tensorflow", "jax"),
        "onnx": ("tensorflow", "jax"),
        "litert": ("tensorflow",),
        "openvino": ("tensorflow",),
    }
    assert {name: f.suffix for name, f in EXPORT_FORMATS.items()} == {
        "tf_saved_model": "",
        "onnx": ".onnx",
        "litert": ".tflite",
        "openvino": "",
    }


def test_missing_modules_name_the_extra_without_importing() -> None:
    fake = EXPORT_FORMATS["onnx"].__class__(
        name="onnx",
        backends=("tensorflow",),
        suffix=".onnx",
        modules=(("tensorflow", ("json", "no_such_module_rules_keras")),),
        dists=(),
        extra="onnx",
        options=frozenset(),
        runtime="ONNX Runtime",
    )
    assert fake.missing("tensorflow") == ["no_such_module_rules_keras"]
    assert fake.missing("jax") == []
    assert fake.install_hint("tensorflow") == (
        "format 'onnx' needs no_such_module_rules_keras; pip install 'rules-keras[onnx]'"
    )


def test_format_options_are_validated_and_sorted(tmp_path: Path) -> None:
    onnx = _target(
        tmp_path, 'keras_export(name="x", model=":model", format="onnx", '
        'format_options={"opset_version": 17})\n'
    )
    assert isinstance(onnx, ExportTarget)
    assert onnx.format_options == (("opset_version", 17),)
    litert = _target(
        tmp_path, 'keras_export(name="x", model=":model", format="litert", '
        'format_options={"target_spec": {"supported_types": ["float16"]}, '
        '"optimizations": ["DEFAULT"]})\n'
    )
    assert isinstance(litert, ExportTarget)
    assert [k for k, _ in litert.format_options] == ["optimizations", "target_spec"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'format="onnx", format_options={"opset_verison": 17}',
            "format 'onnx' has no option 'opset_verison'; it accepts ['opset_version']. "
            "Did you mean 'opset_version'?",
        ),
        (
            'format="onnx", format_options={"opset_version": "17"}',
            "format_options['opset_version'] must be an int >= 1. Received: '17'",
        ),
        (
            'format_options={"opset_version": 17}',
            "format 'tf_saved_model' has no option 'opset_version'; it takes none.",
        ),
        (
            'format="litert", format_options={"representative_dataset": "data"}',
            "needs a Python callable",
        ),
        ('format="litert", format_options=[1]', "attribute 'format_options' must be a dict"),
        (
            'format="litert", format_options={"optimizations": {1, 2}}',
            "must hold only JSON-like values",
        ),
        (
            'format="onnx", endpoints=[endpoint("a", inputs=[X]), endpoint("b", inputs=[X])]',
            "format 'onnx' exports the model's call only",
        ),
        (
            'format="litert", endpoints=[endpoint("a", fn="encode", inputs=[X])]',
            "Received: endpoints=['a:encode']",
        ),
        (
            'format="openvino", track=["lookup"]',
            "attribute 'track' applies to format 'tf_saved_model' only",
        ),
        ('format="litert", out="model.bin"', "attribute 'out' must end with '.tflite'"),
        ('format="onnx", serving="m"', "attribute 'serving' needs format 'tf_saved_model'"),
        ('serving="../up"', "must be a TF Serving model name"),
        ('serving="12"', None),
    ],
)
def test_bad_format_attributes_are_broken_targets(
    tmp_path: Path, body: str, expected: str | None
) -> None:
    text = f'X = tensor_spec((None, 3))\nkeras_export(name="x", model=":model", {body})\n'
    target = _target(tmp_path, text)
    if expected is None:
        assert isinstance(target, ExportTarget)
        return
    assert isinstance(target, BrokenTarget), target
    assert expected in target.message


def test_litert_from_a_jax_model_is_rejected_before_any_build(tmp_path: Path) -> None:
    model_package(
        tmp_path,
        extra_build=JAX_MODEL
        + 'keras_export(name="lite", model=":jmodel", format="litert")\n'
        + 'keras_export(name="ov", model=":jmodel", format="openvino")\n'
        + 'keras_export(name="ox", model=":jmodel", format="onnx")\n',
    )
    result = graph(tmp_path)
    found = failures(result)
    assert (
        "format 'litert' cannot be exported from the 'jax' backend of //m:jmodel; "
        "it supports ['tensorflow']" in found["//m:lite"]
    )
    assert "format 'openvino' cannot be exported" in found["//m:ov"]
    assert "//m:ox" in action_labels(result)


def test_artifact_paths_carry_the_format_suffix(tmp_path: Path) -> None:
    model_package(
        tmp_path,
        extra_build='keras_export(name="ox", model=":model", format="onnx")\n'
        'keras_export(name="lite", model=":model", format="litert", out="sub/m.tflite")\n'
        'keras_export(name="ov", model=":model", format="openvino")\n',
    )
    outputs = {str(a.label): a.output for a in graph(tmp_path).actions}
    assert outputs["//m:ox"] == "artifacts/m/ox.onnx"
    assert outputs["//m:lite"] == "artifacts/m/sub/m.tflite"
    assert outputs["//m:ov"] == "artifacts/m/ov"
    assert outputs["//m:serve"] == "artifacts/m/serve"


def test_two_targets_may_not_serve_the_same_model_name(tmp_path: Path) -> None:
    model_package(
        tmp_path,
        extra_build='keras_export(name="a", model=":model", serving="same")\n'
        'keras_export(name="b", model=":model", serving="same")\n'
        'keras_export(name="c", model=":model", serving="other")\n',
    )
    result = graph(tmp_path)
    found = failures(result)
    for name in ("//m:a", "//m:b"):
        assert "targets //m:a, //m:b publish the same TF Serving model 'same'" in found[name]
    assert "//m:c" in action_labels(result)


def test_format_options_enter_the_action_key_only_when_set(tmp_path: Path) -> None:
    model_package(
        tmp_path,
        extra_build='keras_export(name="ox", model=":model", format="onnx", '
        'format_options={"opset_version": 17})\n',
    )
    actions = {str(a.label): a for a in graph(tmp_path).actions}
    assert attributes(actions["//m:ox"])["format_options"] == {"opset_version": 17}
    assert "format_options" not in attributes(actions["//m:serve"])
