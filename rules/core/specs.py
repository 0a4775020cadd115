"""Endpoint and tensor-spec values: declared in BUILD files, hashed into keys, sent to workers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one input tensor; `None` dimensions are dynamic."""

    shape: tuple[int | None, ...]
    dtype: str = "float32"
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "name": self.name}


@dataclass(frozen=True)
class SpecDict:
    """A dict of specs, kept as sorted items so the value is frozen and hashable."""

    items: tuple[tuple[str, SpecTree], ...]


SpecTree = TensorSpec | SpecDict | tuple["SpecTree", ...]


@dataclass(frozen=True)
class Endpoint:
    """One function of the exported artifact.

    `fn` is a model method name or `module:function`; `inputs` has one tree per
    positional argument; `training` is passed to the model call when not None.
    """

    name: str
    fn: str = "call"
    inputs: tuple[SpecTree, ...] = ()
    training: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fn": self.fn,
            "inputs": [tree_to_json(tree) for tree in self.inputs],
            "training": self.training,
        }


def tree_to_json(tree: SpecTree) -> Any:
    """JSON form of a spec tree: {"tensor": ...}, {"dict": {...}} or a list."""
    if isinstance(tree, TensorSpec):
        return {"tensor": tree.to_json()}
    if isinstance(tree, SpecDict):
        return {"dict": {key: tree_to_json(value) for key, value in tree.items}}
    return [tree_to_json(t) for t in tree]


def tree_from_json(data: Any) -> SpecTree:
    """Inverse of tree_to_json."""
    if isinstance(data, list):
        return tuple(tree_from_json(d) for d in data)
    if "tensor" in data:
        t = data["tensor"]
        return TensorSpec(tuple(t["shape"]), t["dtype"], t["name"])
    return SpecDict(tuple((k, tree_from_json(v)) for k, v in sorted(data["dict"].items())))


def endpoint_from_json(data: Mapping[str, Any]) -> Endpoint:
    """Inverse of Endpoint.to_json."""
    return Endpoint(
        data["name"],
        data["fn"],
        tuple(tree_from_json(t) for t in data["inputs"]),
        data["training"],
    )


def map_tree(leaf_fn: Callable[[TensorSpec], Any], tree: SpecTree) -> Any:
    """The nest `tree` describes, with `leaf_fn(spec)` at each leaf: dicts stay dicts (keys
    sorted), sequences become lists. Samples, tf.TensorSpecs and keras.InputSpecs are all
    built this way, so every consumer walks a spec tree in the same order as Keras does."""
    if isinstance(tree, TensorSpec):
        return leaf_fn(tree)
    if isinstance(tree, SpecDict):
        return {key: map_tree(leaf_fn, value) for key, value in tree.items}
    return [map_tree(leaf_fn, t) for t in tree]


class Leaf(NamedTuple):
    """One tensor of a spec tree: where it sits, its input name, its spec."""

    path: tuple[str | int, ...]
    name: str | None
    spec: TensorSpec


def leaves(tree: SpecTree, path: tuple[str | int, ...] = ()) -> list[Leaf]:
    """The leaves in Keras's flattening order (dict keys sorted), each with its path in the
    tree and its input name: the spec's own name, else the nearest dict key."""
    if isinstance(tree, TensorSpec):
        return [Leaf(path, tree.name, tree)]
    if isinstance(tree, SpecDict):
        return [
            leaf._replace(name=leaf.name or key)
            for key, value in tree.items
            for leaf in leaves(value, (*path, key))
        ]
    return [leaf for i, t in enumerate(tree) for leaf in leaves(t, (*path, i))]


def at_path(nest: Any, path: tuple[str | int, ...]) -> Any:
    """The value at `path` in a nest of lists and dicts built like the spec tree."""
    for step in path:
        nest = nest[step]
    return nest
