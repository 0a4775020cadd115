"""Tests for rules.loading.specs: tensor_spec/endpoint validation and the JSON round-trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rules.core.specs import (
    Endpoint,
    SpecDict,
    TensorSpec,
    endpoint_from_json,
    tree_from_json,
    tree_to_json,
)
from rules.loading.specs import DTYPES, SpecError, endpoint, tensor_spec

X = tensor_spec((None, 3))


def test_tensor_spec_defaults_and_tuple_shape() -> None:
    spec = tensor_spec([None, 28, 28, 1])
    assert spec == TensorSpec((None, 28, 28, 1), "float32", None)
    assert isinstance(spec.shape, tuple)
    assert tensor_spec((), "string", name="text") == TensorSpec((), "string", "text")


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_every_known_dtype_is_accepted(dtype: str) -> None:
    assert tensor_spec((1,), dtype).dtype == dtype


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"shape": "abc"}, "Received: shape='abc'"),
        ({"shape": 3}, "Received: shape=3"),
        ({"shape": (None, -1)}, "Received: shape=(None, -1)"),
        ({"shape": (1.5,)}, "Received: shape=(1.5,)"),
        ({"shape": (True,)}, "Received: shape=(True,)"),
        ({"shape": (1,), "dtype": "float"}, "Received: dtype='float'"),
        ({"shape": (1,), "dtype": "tf.float32"}, "Received: dtype='tf.float32'"),
        ({"shape": (1,), "name": 3}, "Received: name=3"),
    ],
)
def test_tensor_spec_errors_name_the_attribute(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        tensor_spec(**kwargs)
    assert str(info.value).startswith("tensor_spec ")
    assert fragment in str(info.value)


def test_endpoint_defaults() -> None:
    ep = endpoint("serve", inputs=[X])
    assert ep == Endpoint("serve", "call", (X,), None)


def test_endpoint_accepts_module_function_and_method() -> None:
    assert endpoint("e", fn="pkg.mod:make", inputs=[X]).fn == "pkg.mod:make"
    assert endpoint("e", fn="predict_step", inputs=[X], training=False).training is False


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "not an id", "inputs": [X]}, "Received: name='not an id'"),
        ({"name": 3, "inputs": [X]}, "Received: name=3"),
        ({"name": "e", "fn": "", "inputs": [X]}, "Received: fn=''"),
        ({"name": "e", "fn": 5, "inputs": [X]}, "Received: fn=5"),
        ({"name": "e", "fn": ":f", "inputs": [X]}, "Received: fn=':f'"),
        ({"name": "e", "fn": "m:not-id", "inputs": [X]}, "Received: fn='m:not-id'"),
        ({"name": "e", "fn": "m:f", "inputs": [X], "training": True}, "Received: training=True"),
        ({"name": "e", "inputs": []}, "Received: inputs=[]"),
        ({"name": "e", "inputs": "x"}, "Received: inputs='x'"),
        ({"name": "e", "inputs": X}, "Received: inputs=TensorSpec"),
    ],
)
def test_endpoint_errors_name_the_attribute(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        endpoint(**kwargs)
    assert fragment in str(info.value)


def test_endpoint_bad_method_name_says_received() -> None:
    with pytest.raises(SpecError, match=r"Received: fn='not-a-method'"):
        endpoint("e", fn="not-a-method", inputs=[X])


def test_endpoint_bad_training_says_received() -> None:
    with pytest.raises(SpecError, match=r"Received: training=1"):
        endpoint("e", inputs=[X], training=1)  # type: ignore[arg-type]


def test_unhashable_dtype_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"Received: dtype=\['float32'\]"):
        tensor_spec((1,), ["float32"])  # type: ignore[arg-type]


def test_nested_inputs_become_frozen_trees() -> None:
    ep = endpoint("e", inputs=[{"b": X, "a": [X, (X,)]}, [X, {"c": X}]])
    first, second = ep.inputs
    assert first == SpecDict((("a", (X, (X,))), ("b", X)))
    assert second == (X, SpecDict((("c", X),)))
    hash(ep)


def test_nested_errors_give_the_path_to_the_bad_leaf() -> None:
    with pytest.raises(SpecError) as info:
        endpoint("e", inputs=[{"a": [X, 3]}])
    message = str(info.value)
    assert "inputs[0]['a'][1]" in message and "Received: 3" in message
    with pytest.raises(SpecError, match=r"dict keys must be strings. Received: 1"):
        endpoint("e", inputs=[{1: X}])


def _trees() -> list[Any]:
    named = tensor_spec((None,), "string", name="text")
    return [
        X,
        named,
        (X, named),
        SpecDict((("a", X), ("b", (named, SpecDict(()))))),
        (),
        ((X,), SpecDict((("tensor", X),))),
    ]


@pytest.mark.parametrize("tree", _trees())
def test_tree_json_round_trip(tree: Any) -> None:
    data = json.loads(json.dumps(tree_to_json(tree)))
    assert tree_from_json(data) == tree


def test_tree_json_shape() -> None:
    assert tree_to_json(X) == {"tensor": {"shape": [None, 3], "dtype": "float32", "name": None}}
    assert tree_to_json(SpecDict((("a", X),))) == {"dict": {"a": tree_to_json(X)}}
    assert tree_to_json((X,)) == [tree_to_json(X)]


@pytest.mark.parametrize(
    "ep",
    [
        endpoint("serve", inputs=[X]),
        endpoint("serve_training", inputs=[{"user": X, "item": X}], training=True),
        endpoint("score", fn="models.ranker.fns:score", inputs=[X, [X, {"k": X}]]),
    ],
)
def test_endpoint_json_round_trip(ep: Endpoint) -> None:
    text = json.dumps(ep.to_json(), sort_keys=True)
    assert endpoint_from_json(json.loads(text)) == ep
