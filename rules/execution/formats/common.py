"""Helpers the format modules share: signatures, the default endpoint, the runtime check."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from rules.core.formats import EXPORT_FORMATS
from rules.execution.failures import JobFailure, user_traceback
from rules.execution.verify import check_call


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


def default_endpoint(model: Any) -> dict[str, Any]:
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
    return {
        "name": "serve",
        "fn": "call",
        "training": None,
        "inputs": [spec_json(tree) for tree in signature],
    }


def call_endpoint(model: Any, opts: Mapping[str, Any]) -> dict[str, Any]:
    """The one endpoint of a call-only format: the declared one, else the default."""
    declared = list(opts["endpoints"])
    return dict(declared[0]) if declared else default_endpoint(model)


def spec_json(tree: Any) -> Any:
    """JSON form (rules.loading.specs.tree_to_json) of a Keras or TF spec tree."""
    if isinstance(tree, Mapping):
        return {"dict": {k: spec_json(v) for k, v in sorted(tree.items())}}
    if isinstance(tree, (list, tuple)):
        return [spec_json(t) for t in tree]
    shape = [None if d is None else int(d) for d in tree.shape]
    dtype = str(getattr(tree.dtype, "name", tree.dtype))
    return {"tensor": {"shape": shape, "dtype": dtype, "name": getattr(tree, "name", None)}}


def tf_specs(tree: Any, tf: Any) -> Any:
    """tf.TensorSpec tree for a JSON spec tree."""
    if isinstance(tree, list):
        return [tf_specs(t, tf) for t in tree]
    if "dict" in tree:
        return {k: tf_specs(v, tf) for k, v in tree["dict"].items()}
    spec = tree["tensor"]
    return tf.TensorSpec(spec["shape"], tf.as_dtype(spec["dtype"]), name=spec["name"])


def input_specs(tree: Any) -> Any:
    """keras.InputSpec tree for a JSON spec tree: every backend's exporter reads these."""
    import keras

    if isinstance(tree, list):
        return [input_specs(t) for t in tree]
    if "dict" in tree:
        return {k: input_specs(v) for k, v in tree["dict"].items()}
    spec = tree["tensor"]
    return keras.InputSpec(shape=tuple(spec["shape"]), dtype=spec["dtype"], name=spec["name"])


def named_leaves(tree: Any, args: Any) -> list[tuple[str | None, Any]]:
    """Flatten sample arguments in Keras's order, each with its spec name (or dict key)."""
    if isinstance(tree, list):
        return [leaf for t, a in zip(tree, args, strict=True) for leaf in named_leaves(t, a)]
    if "dict" in tree:
        return [
            (name or key, value)
            for key in sorted(tree["dict"])
            for name, value in named_leaves(tree["dict"][key], args[key])
        ]
    return [(tree["tensor"]["name"], args)]


def feed(runtime_names: list[str], ep: Mapping[str, Any], args: list[Any]) -> dict[str, Any]:
    """Map sample arguments to the artifact's input names.

    By name when the artifact kept every spec name (converters keep the names
    of named specs but rename unnamed ones, e.g. args_0), else by position.
    """
    leaves = named_leaves(list(ep["inputs"]), args)
    names = [name for name, _ in leaves]
    if sorted(runtime_names) == sorted(n for n in names if n is not None) and None not in names:
        return {name: value for name, value in leaves if name is not None}
    if len(runtime_names) != len(leaves):
        raise JobFailure(
            "VerificationError",
            f"the artifact has inputs {runtime_names} but endpoint {ep['name']!r} declares "
            f"{len(leaves)}: {names}",
        )
    return {rt: value for rt, (_, value) in zip(runtime_names, leaves, strict=True)}


def verify_call(
    format: str,
    model: Any,
    ep: Mapping[str, Any],
    run: Callable[[list[Any]], Any],
    tolerance: float,
    runtime: str,
) -> dict[str, Any]:
    """Run the parity check and return the manifest's verification record, or fail the job."""
    try:
        check = check_call(ep, lambda *args: model(*args, training=False), run, tolerance)
    except JobFailure:
        raise
    except Exception as err:
        raise JobFailure(
            "VerificationError",
            f"running the {format} artifact in {runtime} on a sample input failed: "
            f"{type(err).__name__}: {first_line(err)}",
            user_traceback(err),
        ) from err
    if not check["ok"]:
        raise JobFailure(
            "VerificationMismatch",
            f"the {format} artifact, run in {runtime}, differs from Keras: max abs diff "
            f"{check['max_abs_diff']:.3g} > tolerance {tolerance:g} (raise `tolerance` on the "
            "target if this is expected numerical noise, e.g. from quantization)",
        )
    return {"runtime": runtime, "tolerance": tolerance, "checks": [check], "passed": True}


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
        from rules.core.errors import did_you_mean

        names = [lyr.name for lyr in model.layers]
        raise JobFailure(
            "AttributeError",
            f"{attr}: the model has no layer {name!r}; its layers are {names}."
            + did_you_mean(name, names),
        ) from None


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
