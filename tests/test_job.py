"""Tests for rules.core.job: the key covers every job field, and the wire form round-trips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from workspace_helpers import graph, write, write_build

from rules.analysis.action_key import compute
from rules.analysis.imports import ImportScanner
from rules.core.digests import DigestCache
from rules.core.frozen import FrozenMap
from rules.core.job import ExportJob, Job, TrainJob, job_from_wire
from rules.core.specs import Endpoint, SpecDict, TensorSpec
from rules.core.toolchain import Toolchain

X = TensorSpec((None, 3), "float32", "x")
BASES: dict[type, Job] = {
    ExportJob: ExportJob("//m:e", "tensorflow", "m.model:build", "tf_saved_model"),
    TrainJob: TrainJob("//m:w", "tensorflow", "m.model:build", "m.train:fit"),
}
# For each field in the key, another value. A new field fails the first test
# until it is given one here, and the key must then change with it; a field
# that must stay out of the key goes in the class's NOT_IN_KEY, with the reason.
ALTERNATIVES: dict[type, dict[str, Any]] = {
    ExportJob: {
        "backend": "jax",
        "factory": "m.model:other",
        "format": "onnx",
        "endpoints": (Endpoint("serve", "call", (X,), None),),
        "variable_collections": (("trainable", "trainable_variables"),),
        "track": ("lookup",),
        "tolerance": 0.5,
        "jax2tf_kwargs": FrozenMap({"native_serialization": False}),
        "format_options": FrozenMap({"opset_version": 17}),
        "sample_inputs": "m.samples:make",
        "strict_verification": True,
        "warn_undeclared_inputs": True,
    },
    TrainJob: {
        "backend": "jax",
        "factory": "m.model:other",
        "train": "m.train:other",
        "seed": 7,
        "warn_undeclared_inputs": True,
    },
}
OUT_OF_KEY: dict[str, Any] = {
    "label": "//elsewhere:renamed",
    "weights": "other/w.weights.h5",
    "sample_inputs_file": "other/samples.npz",
}


@pytest.mark.parametrize("cls", [ExportJob, TrainJob])
def test_every_field_enters_the_key_or_says_why_not(cls: type) -> None:
    base = BASES[cls]
    names = {f.name for f in dataclasses.fields(cls)}
    listed = set(ALTERNATIVES[cls]) | set(cls.NOT_IN_KEY)  # type: ignore[attr-defined]
    assert names == listed, (
        f"{cls.__name__} fields {sorted(names ^ listed)}: give each an alternative value in "
        "ALTERNATIVES (the key must then change with it), or put it in NOT_IN_KEY with the reason"
    )
    for name, value in ALTERNATIVES[cls].items():
        changed = dataclasses.replace(base, **{name: value})
        assert changed.key_attributes() != base.key_attributes(), f"{name} is not in the key"
    for name in cls.NOT_IN_KEY:  # type: ignore[attr-defined]
        moved = dataclasses.replace(base, **{name: OUT_OF_KEY[name]})
        assert moved.key_attributes() == base.key_attributes(), name


def test_empty_optional_fields_leave_the_key_as_it_was() -> None:
    attrs = BASES[ExportJob].key_attributes()
    assert set(attrs) == {"kind", "backend", "factory", "format", "tolerance"}


@pytest.mark.parametrize("cls", [ExportJob, TrainJob])
def test_wire_round_trip_through_json(cls: type) -> None:
    full = dataclasses.replace(BASES[cls], **ALTERNATIVES[cls], weights="m/w.weights.h5")
    for job in (BASES[cls], full):
        wire = json.loads(json.dumps(job.to_wire()))
        assert job_from_wire(wire) == job


def test_nested_specs_round_trip() -> None:
    tree = SpecDict((("a", (X, TensorSpec((2,), "int32", None))), ("b", X)))
    job = dataclasses.replace(
        BASES[ExportJob], endpoints=(Endpoint("serve", "m.fns:serve", (tree, X), None),)
    )
    assert job_from_wire(json.loads(json.dumps(job.to_wire()))) == job


@pytest.mark.parametrize(
    ("data", "message"),
    [({"kind": "keras_deploy"}, "unknown job kind"), ({"kind": "keras_train"}, "malformed job")],
)
def test_from_wire_rejects_what_to_wire_never_writes(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        job_from_wire(data)


BUILD = """\
keras_train(name="w", factory="m.model:build", train="m.train:fit", seed=3)
keras_model(name="model", factory="m.model:build", weights=":w")
keras_model(name="jmodel", factory="m.model:build", weights="init.weights.h5", backend="jax")
features = [{"user": tensor_spec((None, 8), name="user"), "item": tensor_spec((None, 8))}]
keras_export(
    name="saved", model=":model", track=["lookup"], tolerance=1e-3,
    endpoints=[endpoint("serve", inputs=features, training=False),
               endpoint("custom", fn="m.fns:serve", inputs=[tensor_spec((None, 3))])],
    variable_collections={"trainable": "trainable_variables"},
)
keras_export(name="jsaved", model=":jmodel", jax2tf_kwargs={"native_serialization": False})
keras_export(name="onnx", model=":model", format="onnx", format_options={"opset_version": 17})
keras_export(name="litert", model=":model", format="litert",
             format_options={"optimizations": ["DEFAULT"],
                             "target_spec": {"supported_types": ["float16"]}})
keras_export(name="openvino", model=":model", format="openvino")
"""


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    write(tmp_path, "m/__init__.py", "")
    write(tmp_path, "m/model.py", "def build():\n    return None\n")
    write(tmp_path, "m/train.py", "def fit(model):\n    return None\n")
    write(tmp_path, "m/fns.py", "def serve(model):\n    return model\n")
    write(tmp_path, "m/init.weights.h5", b"weights")
    write_build(tmp_path, "m", BUILD)
    return tmp_path


def test_every_rule_and_format_round_trips(ws: Path) -> None:
    actions = graph(ws).actions
    formats = {a.job.format for a in actions if isinstance(a.job, ExportJob)}
    assert formats == {"tf_saved_model", "onnx", "litert", "openvino"}
    assert {a.job.kind for a in actions} == {"keras_train", "keras_export"}
    for action in actions:
        assert job_from_wire(json.loads(json.dumps(action.job.to_wire()))) == action.job


def test_the_action_key_hashes_exactly_the_job(ws: Path) -> None:
    digests = DigestCache(ws / ".state" / "d.json")
    scanner = ImportScanner(ws, digests, ws / ".state" / "i.json")
    toolchain = Toolchain("CPython 3.11.7", (("keras", "keras==3.10.0"),), ())
    write(ws, "artifacts/m/w.weights.h5", b"trained")  # as if //m:w had been built
    for action in graph(ws).actions:
        inputs = compute(action, ws, digests, scanner, toolchain).inputs
        hashed = {**inputs["attrs"], "kind": inputs["kind"], "backend": inputs["backend"]}
        assert hashed == action.job.key_attributes(), action.label
