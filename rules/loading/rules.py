"""The rule functions called from BUILD.py: keras_train, keras_model, keras_export.

Each validates its attributes when it is called, so a mistake is reported
against the target label and the BUILD.py line before anything is built. A bad
declaration registers a BrokenTarget instead of raising, so the rest of the
BUILD.py still loads and dependents say what is wrong with what they need.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from rules.core.errors import did_you_mean
from rules.core.specs import Endpoint
from rules.loading import attrs
from rules.loading.attrs import AttrError
from rules.loading.context import PackageContext, current
from rules.loading.labels import Label, LabelError, valid_name
from rules.loading.specs import SpecError
from rules.loading.targets import BrokenTarget, ExportTarget, ModelTarget, Target, TrainTarget

DEFAULT_TOLERANCE = 1e-5


F = TypeVar("F", bound=Callable[..., None])


def _rule(func: F) -> F:
    """Wrap a rule: unknown attributes and AttrErrors become a BrokenTarget, not a crash."""
    signature = inspect.signature(func)
    known = list(signature.parameters)
    # Computed once per rule, not per call: a 1,000-target workspace calls these
    # 2,000 times on every no-op.
    required = [p.name for p in signature.parameters.values()
                if p.default is inspect.Parameter.empty]

    def wrapper(**given: Any) -> None:
        ctx = current()
        where = ctx.call_site()
        name = given.get("name")
        if not isinstance(name, str) or not valid_name(name):
            label_text = f"//{ctx.package}:<unnamed>"
            message = (
                f"{func.__name__}() needs name= with letters, digits, '_', '-' or '.'. "
                f"Received: name={name!r}"
            )
            raise AttrError(f"{label_text}: {message} (declared at {where})")
        label = Label(ctx.package, name)
        unknown = sorted(set(given) - set(known))
        missing = [name for name in required if name not in given]
        try:
            if unknown:
                raise AttrError(
                    f"{func.__name__}() got unknown attribute {unknown[0]!r}."
                    + did_you_mean(unknown[0], known)
                )
            if missing:
                raise AttrError(f"{func.__name__}() is missing required attribute {missing[0]!r}")
            func(**given)
        except (AttrError, SpecError, LabelError) as err:
            _register(ctx, BrokenTarget(label, where, str(err)))

    wrapper.__name__ = func.__name__
    wrapper.__qualname__ = func.__qualname__
    wrapper.__doc__ = func.__doc__
    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _register(ctx: PackageContext, target: Target) -> None:
    ctx.targets.append(target)


@_rule
def keras_train(
    *,
    name: str,
    factory: str,
    train: str,
    backend: str = "tensorflow",
    seed: int = 0,
    data: Sequence[str] = (),
    weights: str | None = None,
    doc: str = "",
    resources: Mapping[str, Any] | None = None,
) -> None:
    """Train a model and write its weights to `artifacts/<package>/<name>.weights.h5`.

    name: the target name; other targets refer to it as ":name".
    factory: "module:function" returning the keras.Model to train (variables built).
    train: "module:function" taking that model and training it in place.
    backend: "tensorflow" or "jax".
    seed: passed to keras.utils.set_random_seed before the factory runs.
    data: files the factory or training function reads, relative to this BUILD.py.
    weights: optional starting weights: a file or the label of another keras_train.
    doc: one line shown by `doit list`.
    resources: where it may run with executor = "ray": {"num_cpus": 2, "num_gpus": 1,
        "memory": "16G", "<custom resource>": 1}. Not in the action key: where an
        action runs must not change what it produces.
    """
    ctx = current()
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise AttrError(f"attribute 'seed' must be an int. Received: {seed!r}")
    _register(
        ctx,
        TrainTarget(
            label=Label(ctx.package, name),
            where=ctx.call_site(),
            factory=attrs.callable_ref("factory", factory),
            train=attrs.callable_ref("train", train),
            backend=attrs.backend(backend),
            seed=seed,
            data=attrs.file_refs(ctx, "data", data),
            weights=None if weights is None else attrs.weights(ctx, "weights", weights),
            doc=attrs.string("doc", doc, allow_empty=True),
            resources=attrs.resources(resources),
        ),
    )


@_rule
def keras_model(
    *,
    name: str,
    factory: str,
    weights: str,
    backend: str = "tensorflow",
    data: Sequence[str] = (),
    doc: str = "",
    resources: Mapping[str, Any] | None = None,
) -> None:
    """Declare a model: an architecture plus the weights to load into it.

    name: the target name; exports refer to it as ":name" or "//package:name".
    factory: "module:function" returning a keras.Model with its variables built.
    weights: a .weights.h5 or .keras file relative to this BUILD.py, or the label
        of a keras_train target producing it.
    backend: "tensorflow" (default) or "jax"; the Keras backend the model runs on.
    data: other files the factory reads (vocabularies, configs), relative to this BUILD.py.
    doc: one line shown by `doit list`.
    resources: the default `resources` of this model's exports (see keras_export).
    """
    ctx = current()
    _register(
        ctx,
        ModelTarget(
            label=Label(ctx.package, name),
            where=ctx.call_site(),
            factory=attrs.callable_ref("factory", factory),
            weights=attrs.weights(ctx, "weights", weights),
            backend=attrs.backend(backend),
            data=attrs.file_refs(ctx, "data", data),
            doc=attrs.string("doc", doc, allow_empty=True),
            resources=attrs.resources(resources),
        ),
    )


@_rule
def keras_export(
    *,
    name: str,
    model: str,
    format: str = "tf_saved_model",
    endpoints: Sequence[Endpoint] = (),
    variable_collections: Mapping[str, str] | None = None,
    track: Sequence[str] = (),
    tolerance: float = DEFAULT_TOLERANCE,
    jax2tf_kwargs: Mapping[str, Any] | None = None,
    out: str | None = None,
    doc: str = "",
    format_options: Mapping[str, Any] | None = None,
    serving: str | None = None,
    sample_inputs: str | None = None,
    strict_verification: bool | None = None,
    resources: Mapping[str, Any] | None = None,
) -> None:
    """Export a keras_model with Keras and verify the artifact in the runtime that serves it.

    name: the target name; the artifact goes to `artifacts/<package>/<name>`, plus
        ".onnx" for onnx and ".tflite" for litert.
    model: label of a keras_model (":name" or "//package:name").
    format: "tf_saved_model" (a directory, checked with TensorFlow), "onnx" (checked
        with ONNX Runtime), "litert" (a .tflite file, checked with the LiteRT
        interpreter; TensorFlow backend only) or "openvino" (a directory holding
        model.xml and model.bin, checked with OpenVINO Runtime; TensorFlow backend only).
    endpoints: list of endpoint(...); empty means Model.export's default:
        "serve" (inference call) plus the "serving_default" signature. Formats
        other than tf_saved_model export the model's call only: at most one
        endpoint with fn="call", which gives the input signature.
    variable_collections: {collection name: attribute path on the model}, e.g.
        {"trainable": "trainable_variables"}; the first path segment may be a
        layer name. tf_saved_model only.
    track: layer names to pass to ExportArchive.track explicitly (lookup layers
        such as TextVectorization, StringLookup, IntegerLookup own tables).
        tf_saved_model only.
    tolerance: max abs difference allowed between the artifact, run in its own
        runtime, and the Keras model on the same deterministic sample input.
    jax2tf_kwargs: passed through to jax2tf.convert on the JAX backend (tf_saved_model).
    out: artifact path relative to `artifacts/<package>/` instead of the name.
    doc: one line shown by `doit list`.
    format_options: passed to Model.export: {"opset_version": 17} for onnx; for
        litert, TFLiteConverter attributes such as {"optimizations": ["DEFAULT"],
        "target_spec": {"supported_types": ["float16"]}} (names of tf.lite.Optimize,
        tf.lite.OpsSet and dtypes stand for those objects).
    serving: a TF Serving model name (tf_saved_model only); every build also
        publishes the artifact as `<serving_root>/<serving>/<version>/`.
    sample_inputs: the parity check's inputs instead of generated ones:
        "module:function" returning {endpoint name: [call, ...]}, each call a
        list with one value per positional input, or a .npz file relative to
        this BUILD.py holding "<endpoint>" (or "<endpoint>/<input path>") arrays
        whose first axis enumerates the calls. It enters the action key.
    strict_verification: True makes a vacuous parity check (Keras outputs the
        same for every sample, all zero, or NaN) fail the target instead of
        warning; None follows the workspace's strict_verification setting.
    resources: where the export may run with executor = "ray": {"num_cpus": 2,
        "num_gpus": 1, "memory": "16G", "<custom resource>": 1}, mapped to Ray's
        scheduling options; each name overrides the model's. Not in the action
        key: where an action runs must not change what it produces (the node's
        toolchain check and the parity check guard that).
    """
    ctx = current()
    fmt = attrs.export_format(format)
    eps = attrs.endpoints(endpoints)
    if fmt != "tf_saved_model":
        attrs.call_only(fmt, eps, variable_collections, track, jax2tf_kwargs)
    _register(
        ctx,
        ExportTarget(
            label=Label(ctx.package, name),
            where=ctx.call_site(),
            model=Label.parse(attrs.string("model", model), ctx.package),
            format=fmt,
            endpoints=eps,
            variable_collections=attrs.variable_collections(variable_collections),
            track=attrs.track(track),
            tolerance=attrs.tolerance(tolerance),
            jax2tf_kwargs=attrs.jax2tf_kwargs(jax2tf_kwargs),
            out=attrs.out(fmt, out),
            doc=attrs.string("doc", doc, allow_empty=True),
            format_options=attrs.format_options(fmt, format_options),
            serving=attrs.serving(fmt, serving),
            sample_inputs=attrs.sample_inputs(ctx, sample_inputs),
            strict_verification=attrs.optional_bool("strict_verification", strict_verification),
            resources=attrs.resources(resources),
        ),
    )
