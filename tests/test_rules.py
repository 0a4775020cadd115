"""Tests for rules.loading.rules: attribute validation of real BUILD.py files."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from workspace_helpers import load, write_build

from rules import keras_export, keras_model, keras_train
from rules.core.specs import TensorSpec
from rules.loading.build_files import load_package
from rules.loading.labels import Label
from rules.loading.targets import (
    BrokenTarget,
    ExportTarget,
    FileRef,
    ModelTarget,
    Target,
    TrainTarget,
)

MODEL = 'keras_model(name="model", factory="m.model:build", weights="w.weights.h5")\n'


def _only(targets: tuple[Target, ...], name: str) -> Target:
    found = [t for t in targets if t.label.name == name]
    assert len(found) == 1, targets
    return found[0]


def _broken(tmp_path: Path, body: str, name: str = "bad") -> BrokenTarget:
    package = load(tmp_path, "m", body)
    assert package.error is None, package.error
    target = _only(package.targets, name)
    assert isinstance(target, BrokenTarget), target
    return target


def test_valid_declarations_become_frozen_targets(tmp_path: Path) -> None:
    package = load(
        tmp_path,
        "m",
        """\
        keras_train(
            name="w",
            factory="m.model:build",
            train="m.train:fit",
            backend="jax",
            seed=3,
            data=["vocab.txt", "sub/../cfg.json"],
            weights="init.weights.h5",
            doc="train it",
        )
        keras_model(name="model", factory="m.model:build", weights=":w", data=["vocab.txt"])
        keras_export(
            name="serve",
            model="//m:model",
            endpoints=[endpoint("serve", inputs=[tensor_spec((None, 3))])],
            variable_collections={"trainable": "trainable_variables", "all": "variables"},
            track=["lookup"],
            tolerance=1e-3,
            out="nested/dir",
            doc="export it",
        )
        """,
    )
    assert package.error is None
    train, model, export = package.targets
    assert train == TrainTarget(
        label=Label("m", "w"),
        where="m/BUILD.py:2",
        factory="m.model:build",
        train="m.train:fit",
        backend="jax",
        seed=3,
        data=(FileRef("m/vocab.txt"), FileRef("m/cfg.json")),
        weights=FileRef("m/init.weights.h5"),
        doc="train it",
    )
    assert isinstance(model, ModelTarget)
    assert model.weights == Label("m", "w") and model.backend == "tensorflow"
    assert model.where == "m/BUILD.py:12"
    assert isinstance(export, ExportTarget)
    assert export.model == Label("m", "model")
    assert export.endpoints[0].inputs == (TensorSpec((None, 3)),)
    assert export.variable_collections == (
        ("all", "variables"),
        ("trainable", "trainable_variables"),
    )
    assert export.track == ("lookup",) and export.tolerance == 1e-3
    assert export.out == "nested/dir" and export.format == "tf_saved_model"
    hash(export)


def test_unknown_attribute_suggests_the_closest_and_names_the_line(tmp_path: Path) -> None:
    broken = _broken(
        tmp_path,
        MODEL + 'keras_export(name="bad", model=":model", formt="tf_saved_model")\n',
    )
    assert "unknown attribute 'formt'. Did you mean 'format'?" in broken.message
    assert broken.where == "m/BUILD.py:3"
    assert broken.label == Label("m", "bad")


def test_the_rest_of_the_build_file_still_loads(tmp_path: Path) -> None:
    package = load(
        tmp_path,
        "m",
        MODEL
        + 'keras_export(name="bad", model=":model", formt="x")\n'
        + 'keras_export(name="good", model=":model")\n',
    )
    assert package.error is None
    assert [type(t).__name__ for t in package.targets] == [
        "ModelTarget",
        "BrokenTarget",
        "ExportTarget",
    ]


def test_missing_required_attribute(tmp_path: Path) -> None:
    broken = _broken(tmp_path, 'keras_model(name="bad", factory="m.model:build")\n')
    assert "keras_model() is missing required attribute 'weights'" in broken.message
    assert broken.where == "m/BUILD.py:2"


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (
            'keras_train(name="bad", factory="m.model:build", train="m.t:fit", seed="1")',
            "attribute 'seed' must be an int. Received: '1'",
        ),
        (
            'keras_train(name="bad", factory="m.model:build", train="m.t:fit", seed=True)',
            "attribute 'seed' must be an int. Received: True",
        ),
        (
            'keras_train(name="bad", factory="m.model", train="m.t:fit")',
            "attribute 'factory' must be 'package.module:function'. Received: 'm.model'",
        ),
        (
            'keras_train(name="bad", factory="m.model:build", train="m/t.py:fit")',
            "attribute 'train' must be 'package.module:function'. Received: 'm/t.py:fit'",
        ),
        (
            'keras_model(name="bad", factory=3, weights="w.keras")',
            "attribute 'factory' must be a non-empty string. Received: 3",
        ),
        (
            'keras_model(name="bad", factory="m.model:build", weights="w.h5")',
            "attribute 'weights' must be a .weights.h5 or .keras file",
        ),
        (
            'keras_model(name="bad", factory="m.model:build", weights="/abs/w.keras")',
            "must be a path relative to this BUILD.py. Received: '/abs/w.keras'",
        ),
        (
            'keras_model(name="bad", factory="m.model:build", weights="../../w.keras")',
            "attribute 'weights' points outside the workspace. Received: '../../w.keras'",
        ),
        (
            'keras_model(name="bad", factory="m.model:build", weights="w.keras", backend="tf")',
            "attribute 'backend' must be one of ['tensorflow', 'jax']. Received: 'tf'",
        ),
        (
            'keras_model(name="bad", factory="m.model:build", weights="w.keras", data="v.txt")',
            "attribute 'data' must be a list of paths. Received: 'v.txt'",
        ),
        (
            'keras_model(name="bad", factory="m.model:build", weights="w.keras", data=[1])',
            "attribute 'data[0]' must be a non-empty string. Received: 1",
        ),
        (
            'keras_model(name="bad", factory="m.model:build", weights="w.keras", doc=1)',
            "attribute 'doc' must be a non-empty string. Received: 1",
        ),
        (
            'keras_model(name="bad", factory="m.model:build", weights="//bad label")',
            "'//bad label'",
        ),
        ('keras_export(name="bad", model="model")', "Received: 'model'"),
        ('keras_export(name="bad", model=":model", format="torch")', "unknown format 'torch'"),
        (
            'keras_export(name="bad", model=":model", format="tf_savedmodel")',
            "Did you mean 'tf_saved_model'?",
        ),
        (
            'keras_export(name="bad", model=":model", endpoints="serve")',
            "attribute 'endpoints' must be a list. Received: 'serve'",
        ),
        (
            'keras_export(name="bad", model=":model", endpoints=["serve"])',
            "endpoints[0] must be endpoint(...). Received: 'serve'",
        ),
        (
            'keras_export(name="bad", model=":model", endpoints=[endpoint("a", inputs=[X]), '
            'endpoint("a", inputs=[X])])',
            "endpoint name 'a' is used twice",
        ),
        (
            'keras_export(name="bad", model=":model", variable_collections={"no t": "v"})',
            "variable collection names must be identifiers. Received: 'no t'",
        ),
        (
            'keras_export(name="bad", model=":model", variable_collections={"t": 3})',
            "attribute \"variable_collections['t']\" must be a non-empty string. Received: 3",
        ),
        (
            'keras_export(name="bad", model=":model", track="lookup")',
            "attribute 'track' must be a list of layer names. Received: 'lookup'",
        ),
        (
            'keras_export(name="bad", model=":model", tolerance=-1)',
            "attribute 'tolerance' must be a number >= 0. Received: -1",
        ),
        (
            'keras_export(name="bad", model=":model", tolerance=float("nan"))',
            "attribute 'tolerance' must be a number >= 0. Received: nan",
        ),
        (
            'keras_export(name="bad", model=":model", tolerance="1e-5")',
            "attribute 'tolerance' must be a number >= 0. Received: '1e-5'",
        ),
        (
            'keras_export(name="bad", model=":model", jax2tf_kwargs=["x"])',
            "attribute 'jax2tf_kwargs' must be a dict. Received: ['x']",
        ),
        (
            'keras_export(name="bad", model=":model", jax2tf_kwargs={"f": object})',
            "attribute 'jax2tf_kwargs' must hold only JSON-like values",
        ),
        (
            'keras_export(name="bad", model=":model", jax2tf_kwargs={"f": float("inf")})',
            "attribute 'jax2tf_kwargs' must be finite. Received: inf",
        ),
        (
            'keras_export(name="bad", model=":model", out="../elsewhere")',
            "attribute 'out' must stay inside artifacts/. Received: '../elsewhere'",
        ),
        (
            'keras_export(name="bad", model=":model", out="/abs")',
            "attribute 'out' must stay inside artifacts/. Received: '/abs'",
        ),
        (
            'keras_export(name="bad", model=":model", out="sub/.staging-1-ab.x")',
            "attribute 'out' must not name a hidden file. Received: 'sub/.staging-1-ab.x'",
        ),
        (
            'keras_export(name="bad", model=":model", sample_inputs="samples.json")',
            "attribute 'sample_inputs' must be 'package.module:function' or a .npz file",
        ),
        (
            'keras_export(name="bad", model=":model", sample_inputs="m/samples.py:make")',
            "attribute 'sample_inputs' must be 'package.module:function'",
        ),
        (
            'keras_export(name="bad", model=":model", sample_inputs="../../s.npz")',
            "attribute 'sample_inputs' points outside the workspace",
        ),
        (
            'keras_export(name="bad", model=":model", strict_verification="yes")',
            "attribute 'strict_verification' must be True or False. Received: 'yes'",
        ),
    ],
)
def test_wrong_attribute_values_become_broken_targets(
    tmp_path: Path, call: str, fragment: str
) -> None:
    broken = _broken(tmp_path, f"X = tensor_spec((None, 3))\n{MODEL}{call}\n")
    assert fragment in broken.message
    assert broken.where == "m/BUILD.py:4"


def test_jax2tf_kwargs_are_kept_sorted_and_json_like(tmp_path: Path) -> None:
    package = load(
        tmp_path,
        "m",
        MODEL
        + 'keras_export(name="e", model=":model", '
        + 'jax2tf_kwargs={"polymorphic_shapes": ("(b, 6)",), "enable_xla": False})\n',
    )
    export = _only(package.targets, "e")
    assert isinstance(export, ExportTarget)
    assert export.jax2tf_kwargs == (("enable_xla", False), ("polymorphic_shapes", ["(b, 6)"]))


def test_a_bad_name_stops_the_build_file_with_its_line(tmp_path: Path) -> None:
    package = load(
        tmp_path, "m", MODEL + 'keras_model(name="a b", factory="x:y", weights="w.keras")\n'
    )
    assert package.error is not None
    assert package.error.where == "m/BUILD.py:3"
    assert "needs name=" in str(package.error) and "Received: name='a b'" in str(package.error)


def test_missing_name_stops_the_build_file(tmp_path: Path) -> None:
    package = load(tmp_path, "m", 'keras_model(factory="x:y", weights="w.keras")\n')
    assert package.error is not None
    assert "Received: name=None" in str(package.error)


def test_positional_arguments_are_refused(tmp_path: Path) -> None:
    package = load(tmp_path, "m", 'keras_model("model", factory="x:y", weights="w.keras")\n')
    assert package.error is not None and package.error.where == "m/BUILD.py:2"
    assert "keras_model()" in str(package.error)


def test_where_is_the_line_inside_a_macro(tmp_path: Path) -> None:
    package = load(
        tmp_path,
        "m",
        """\
        def exported_model(name):
            keras_model(name=name, factory="m.model:build", weights="w.keras")
            keras_export(name=name + "_serving", model=":" + name)

        exported_model("a")
        exported_model("b")
        """,
    )
    assert package.error is None
    assert [(str(t.label), t.where) for t in package.targets] == [
        ("//m:a", "m/BUILD.py:3"),
        ("//m:a_serving", "m/BUILD.py:4"),
        ("//m:b", "m/BUILD.py:3"),
        ("//m:b_serving", "m/BUILD.py:4"),
    ]


def test_root_package_labels(tmp_path: Path) -> None:
    package = load(tmp_path, "", MODEL)
    (model,) = package.targets
    assert model.label == Label("", "model") and model.where == "BUILD.py:2"
    assert isinstance(model, ModelTarget) and model.weights == FileRef("w.weights.h5")


@pytest.mark.parametrize("rule", [keras_train, keras_model, keras_export])
def test_rules_outside_a_build_file_raise_a_clear_error(rule: object) -> None:
    with pytest.raises(RuntimeError, match=r"only be called from a BUILD\.py"):
        rule(name="x")  # type: ignore[operator]


@pytest.mark.parametrize("rule", [keras_train, keras_model, keras_export])
def test_every_attribute_is_documented(rule: object) -> None:
    doc = inspect.getdoc(rule) or ""
    for name in inspect.signature(rule).parameters:  # type: ignore[arg-type]
        assert f"{name}:" in doc, f"{rule}: attribute {name!r} is not documented"


def test_loading_twice_gives_equal_targets(tmp_path: Path) -> None:
    path = write_build(tmp_path, "m", MODEL)
    assert load_package(tmp_path, path) == load_package(tmp_path, path)


def test_variable_collections_list_is_a_broken_target(tmp_path: Path) -> None:
    broken = _broken(
        tmp_path, MODEL + 'keras_export(name="bad", model=":model", variable_collections=["t"])\n'
    )
    assert "variable_collections" in broken.message and "Received: ['t']" in broken.message


def test_unhashable_format_is_a_broken_target(tmp_path: Path) -> None:
    broken = _broken(tmp_path, MODEL + 'keras_export(name="bad", model=":model", format=["x"])\n')
    assert "format" in broken.message


@pytest.mark.parametrize("out", [".", "a/.."])
def test_out_must_name_a_path_below_the_package_folder(tmp_path: Path, out: str) -> None:
    broken = _broken(tmp_path, MODEL + f'keras_export(name="bad", model=":model", out="{out}")\n')
    assert "'out'" in broken.message
