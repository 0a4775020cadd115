"""Helpers the format modules share: signatures, the default endpoint, inputs by name, errors."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from rules.core.errors import did_you_mean
from rules.core.formats import EXPORT_FORMATS
from rules.core.job import ExportJob
from rules.core.specs import Endpoint, SpecDict, SpecTree, TensorSpec, at_path, leaves, map_tree
from rules.execution.failures import JobFailure, user_traceback


def require(format: str, backend: str) -> None:
    """Import the optional modules the format needs, or fail naming the extra to install.

    The build checks the same with find_spec before starting a worker; this
    catches a module that is present but broken, and workers started by hand.
    """
    spec = EXPORT_FORMATS[format]
    for module in dict(spec.modules).get(backend, ()):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise JobFailure(
                "MissingExtra", f"{spec.install_hint(backend)} (import {module}: {err})"
            ) from err


def default_endpoint(model: Any) -> Endpoint:
    """Model.export's default: `serve` calls the model in inference mode."""
    from keras.src.export.export_utils import get_input_signature

    try:
        signature = get_input_signature(model)
    except Exception as err:
        raise JobFailure(
            "SignatureError",
            f"cannot infer the model's input signature ({err}); declare endpoints= "
            "with explicit inputs",
        ) from err
    return Endpoint("serve", "call", tuple(tree_from_keras(tree) for tree in signature), None)


def call_endpoint(model: Any, job: ExportJob) -> Endpoint:
    """The one endpoint of a call-only format: the declared one, else the default."""
    return job.endpoints[0] if job.endpoints else default_endpoint(model)


def tree_from_keras(tree: Any) -> SpecTree:
    """The typed spec tree of a Keras or TF spec tree (dicts, lists and specs)."""
    if isinstance(tree, Mapping):
        return SpecDict(tuple((k, tree_from_keras(v)) for k, v in sorted(tree.items())))
    if isinstance(tree, (list, tuple)):
        return tuple(tree_from_keras(t) for t in tree)
    shape = tuple(None if d is None else int(d) for d in tree.shape)
    dtype = str(getattr(tree.dtype, "name", tree.dtype))
    return TensorSpec(shape, dtype, getattr(tree, "name", None))


def tf_specs(tree: SpecTree, tf: Any) -> Any:
    """tf.TensorSpec tree for a spec tree."""
    return map_tree(lambda s: tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name), tree)


def input_specs(tree: SpecTree) -> Any:
    """keras.InputSpec tree for a spec tree: every backend's exporter reads these."""
    import keras

    return map_tree(lambda s: keras.InputSpec(shape=s.shape, dtype=s.dtype, name=s.name), tree)


def named_leaves(trees: Sequence[SpecTree], args: Any) -> list[tuple[str | None, Any]]:
    """Sample arguments in Keras's flattening order, each with its spec name (or dict key)."""
    return [(leaf.name, at_path(args, leaf.path)) for leaf in leaves(tuple(trees))]


def feed(runtime_names: list[str], ep: Endpoint, args: list[Any]) -> dict[str, Any]:
    """Map sample arguments to the artifact's input names.

    By name when the artifact kept every spec name (converters keep the names
    of named specs but rename unnamed ones, e.g. args_0), else by position.
    """
    pairs = named_leaves(ep.inputs, args)
    names = [name for name, _ in pairs]
    if sorted(runtime_names) == sorted(n for n in names if n is not None) and None not in names:
        return {name: value for name, value in pairs if name is not None}
    if len(runtime_names) != len(pairs):
        raise JobFailure(
            "VerificationError",
            f"the artifact has inputs {runtime_names} but endpoint {ep.name!r} declares "
            f"{len(pairs)}: {names}",
        )
    return {rt: value for rt, (_, value) in zip(runtime_names, pairs, strict=True)}


def export_failed(format: str, err: Exception) -> JobFailure:
    """The JobFailure for an exception raised by Model.export."""
    return JobFailure(
        "ExportError",
        f"Keras could not export the model as {format}: {type(err).__name__}: {first_line(err)}",
        user_traceback(err),
    )


def layer(model: Any, name: str, attr: str) -> Any:
    """The model's layer `name`, or a failure listing the layers it has."""
    try:
        return model.get_layer(name)
    except ValueError:
        names = [lyr.name for lyr in model.layers]
        raise JobFailure(
            "AttributeError",
            f"{attr}: the model has no layer {name!r}; its layers are {names}."
            + did_you_mean(name, names),
        ) from None


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
