"""endpoint() and tensor_spec(): the BUILD-file constructors, each validating what it is given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rules.core.specs import Endpoint, SpecDict, SpecTree, TensorSpec

DTYPES = frozenset(
    {
        "float16", "bfloat16", "float32", "float64",
        "int8", "int16", "int32", "int64", "uint8", "bool", "string",
    }
)  # fmt: skip


class SpecError(ValueError):
    """An endpoint or tensor_spec was declared wrongly."""


def tensor_spec(
    shape: Sequence[int | None], dtype: str = "float32", name: str | None = None
) -> TensorSpec:
    """Declare an input tensor: `shape` uses None for dynamic dims, `dtype` a numpy-style name."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise SpecError(f"tensor_spec shape must be a list or tuple. Received: shape={shape!r}")
    dims: list[int | None] = []
    for dim in shape:
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 0):
            raise SpecError(
                f"tensor_spec dimensions must be None or ints >= 0. Received: shape={shape!r}"
            )
        dims.append(dim)
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise SpecError(
            f"tensor_spec dtype must be one of {sorted(DTYPES)}. Received: dtype={dtype!r}"
        )
    if name is not None and not isinstance(name, str):
        raise SpecError(f"tensor_spec name must be a string. Received: name={name!r}")
    return TensorSpec(tuple(dims), dtype, name)


def as_tree(value: object, where: str) -> SpecTree:
    """Check that `value` is a nest of lists, tuples, dicts and TensorSpecs."""
    if isinstance(value, TensorSpec):
        return value
    if isinstance(value, Mapping):
        items = []
        for key in sorted(value):
            if not isinstance(key, str):
                raise SpecError(f"{where}: dict keys must be strings. Received: {key!r}")
            items.append((key, as_tree(value[key], f"{where}[{key!r}]")))
        return SpecDict(tuple(items))
    if isinstance(value, (list, tuple)):
        return tuple(as_tree(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise SpecError(
        f"{where} must be a tensor_spec(...) or a list/dict of them. Received: {value!r}"
    )


def endpoint(
    name: str,
    *,
    fn: str = "call",
    inputs: Sequence[object] = (),
    training: bool | None = None,
) -> Endpoint:
    """Declare an endpoint of an exported artifact.

    name: the endpoint's name in the SavedModel (`loaded.<name>(...)`).
    fn: a method of the model ("call" means `model(x)`), or "module:function"
        that takes the model and returns the callable to export.
    inputs: the input signature, one entry per positional argument; each entry
        is a tensor_spec or a nested list/dict of them.
    training: passed as `training=` to the model call; None leaves it out
        (inference for "call").
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise SpecError(f"endpoint name must be a Python identifier. Received: name={name!r}")
    if not isinstance(fn, str) or not fn:
        raise SpecError(f"endpoint {name!r}: fn must be a string. Received: fn={fn!r}")
    if ":" in fn:
        module, _, function = fn.partition(":")
        if not module or not function.isidentifier():
            raise SpecError(
                f"endpoint {name!r}: fn must be 'method' or 'module:function'. Received: fn={fn!r}"
            )
        if training is not None:
            raise SpecError(
                f"endpoint {name!r}: training= applies to model methods only; "
                f"{fn!r} decides it itself. Received: training={training!r}"
            )
    elif not fn.isidentifier():
        raise SpecError(f"endpoint {name!r}: fn must be a method name. Received: fn={fn!r}")
    if training is not None and not isinstance(training, bool):
        raise SpecError(
            f"endpoint {name!r}: training must be True, False or None. "
            f"Received: training={training!r}"
        )
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence) or not inputs:
        raise SpecError(
            f"endpoint {name!r}: inputs must be a non-empty list of tensor_spec. "
            f"Received: inputs={inputs!r}"
        )
    trees = tuple(as_tree(v, f"endpoint {name!r} inputs[{i}]") for i, v in enumerate(inputs))
    return Endpoint(name, fn, trees, training)
