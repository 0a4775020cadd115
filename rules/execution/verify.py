"""Deterministic sample inputs and the parity check between a reloaded artifact and Keras."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rules.core.specs import Endpoint, SpecTree, TensorSpec, map_tree

# Dynamic dimensions become this size in sample inputs: small, but more than 1
# so that batch-dependent bugs (e.g. a squeezed axis) still show.
DYNAMIC_DIM = 2
# Integers are drawn from [0, INT_HIGH): small enough to index any embedding
# or lookup table a real model has.
INT_HIGH = 4
WORDS = ("the", "a", "good", "bad", "movie", "great", "plot", "boring", "fun", "model")


def sample(tree: SpecTree, rng: np.random.Generator) -> Any:
    """A nest of numpy arrays matching a spec tree, drawn leaf by leaf in Keras's order."""
    return map_tree(lambda spec: _sample_leaf(spec, rng), tree)


def _sample_leaf(spec: TensorSpec, rng: np.random.Generator) -> Any:
    shape = tuple(DYNAMIC_DIM if d is None else d for d in spec.shape)
    dtype = spec.dtype
    if dtype == "string":
        words = rng.choice(WORDS, size=(*shape, 3))
        return np.array([" ".join(w) for w in words.reshape(-1, 3)], dtype=object).reshape(shape)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, INT_HIGH, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype("float32").astype(dtype)


def max_abs_diff(expected: Any, got: Any) -> float:
    """Largest absolute difference between two nests of arrays; structure must match."""
    from keras import tree

    a_leaves = tree.flatten(expected)
    b_leaves = tree.flatten(got)
    if len(a_leaves) != len(b_leaves):
        raise ValueError(
            f"output structure differs: Keras gives {len(a_leaves)} tensors, "
            f"the artifact gives {len(b_leaves)}"
        )
    worst = 0.0
    for a, b in zip(a_leaves, b_leaves, strict=False):
        x, y = _numpy(a), _numpy(b)
        if x.shape != y.shape:
            raise ValueError(f"output shape differs: Keras {x.shape}, artifact {y.shape}")
        if x.dtype.kind in "OSUb" or y.dtype.kind in "OSUb":
            worst = max(worst, 0.0 if np.array_equal(x, y) else float("inf"))
        elif x.size:
            a, b = x.astype("float64"), y.astype("float64")
            if not np.array_equal(np.isnan(a), np.isnan(b)):
                return float("inf")  # NaN on one side only: max() would hide it
            diff = np.abs(a - b)
            worst = max(worst, float(np.max(np.where(np.isnan(diff), 0.0, diff))))
    return worst


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def check_endpoints(
    endpoints: Sequence[Endpoint],
    keras_fns: Mapping[str, Callable[..., Any]],
    reloaded: Mapping[str, Callable[..., Any]],
    tolerance: float,
) -> list[dict[str, Any]]:
    """Call every endpoint on both sides with the same sample; return one record each.

    Calls go in endpoint order on both sides, so stateful endpoints (e.g. a
    training=True BatchNormalization update) mutate both models identically.
    """
    records = []
    for index, ep in enumerate(endpoints):
        rng = np.random.default_rng(index)
        args = [sample(tree, rng) for tree in ep.inputs]
        expected = keras_fns[ep.name](*args)
        got = reloaded[ep.name](*args)
        diff = max_abs_diff(expected, got)
        ok = diff <= tolerance
        records.append({"name": ep.name, "sample_seed": index, "max_abs_diff": diff, "ok": ok})
    return records


def check_call(
    ep: Endpoint,
    keras_fn: Callable[..., Any],
    artifact_fn: Callable[[list[Any]], Any],
    tolerance: float,
) -> dict[str, Any]:
    """The check for artifacts that hold the model's call only (ONNX, LiteRT, OpenVINO).

    It feeds the sample check_endpoints gives the first endpoint (seed 0), so a
    target exported in several formats is checked on the same input in each.
    `artifact_fn` takes the positional arguments as a list.
    """
    rng = np.random.default_rng(0)
    args = [sample(tree, rng) for tree in ep.inputs]
    expected = keras_fn(*args)
    got = artifact_fn(args)
    diff = max_abs_diff(expected, got)
    return {"name": ep.name, "sample_seed": 0, "max_abs_diff": diff, "ok": diff <= tolerance}
