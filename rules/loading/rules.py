"""The rule functions called from BUILD.py: keras_train, keras_model, keras_export.

Each validates its attributes when it is called, so a mistake is reported
against the target label and the BUILD.py line before anything is built. A bad
declaration registers a BrokenTarget instead of raising, so the rest of the
BUILD.py still loads and dependents say what is wrong with what they need.
"""

from __future__ import annotations

import inspect
import math
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from rules.core.errors import did_you_mean
from rules.core.formats import EXPORT_FORMATS
from rules.core.specs import Endpoint
from rules.loading.context import PackageContext, current
from rules.loading.labels import Label, LabelError, is_label, valid_name
from rules.loading.specs import SpecError
from rules.loading.targets import (
    BACKENDS,
    BrokenTarget,
    ExportTarget,
    FileRef,
    ModelTarget,
    Target,
    TrainTarget,
)

# LiteRT converter settings that need Python objects a BUILD.py cannot declare as data.
UNDECLARABLE_OPTIONS = frozenset({"representative_dataset"})
# TF Serving model names become folder names and config entries: keep them plain.
SERVING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
WEIGHTS_SUFFIXES = (".weights.h5", ".keras")
DEFAULT_TOLERANCE = 1e-5


class AttrError(ValueError):
    """One attribute of one declaration is wrong; the rule turns it into a BrokenTarget."""


F = TypeVar("F", bound=Callable[..., None])


def _rule(func: F) -> F:
    """Wrap a rule: unknown attributes and AttrErrors become a BrokenTarget, not a crash."""
    known = [p for p in inspect.signature(func).parameters if p != "unknown"]

    def wrapper(**attrs: Any) -> None:
        ctx = current()
        where = ctx.call_site()
        name = attrs.get("name")
        if not isinstance(name, str) or not valid_name(name):
            label_text = f"//{ctx.package}:<unnamed>"
            message = (
                f"{func.__name__}() needs name= with letters, digits, '_', '-' or '.'. "
                f"Received: name={name!r}"
            )
            raise AttrError(f"{label_text}: {message} (declared at {where})")
        label = Label(ctx.package, name)
        unknown = sorted(set(attrs) - set(known))
        missing = [
            p.name
            for p in inspect.signature(func).parameters.values()
            if p.default is inspect.Parameter.empty and p.name not in attrs and p.name != "unknown"
        ]
        try:
            if unknown:
                raise AttrError(
                    f"{func.__name__}() got unknown attribute {unknown[0]!r}."
                    + did_you_mean(unknown[0], known)
                )
            if missing:
                raise AttrError(f"{func.__name__}() is missing required attribute {missing[0]!r}")
            func(**attrs)
        except (AttrError, SpecError, LabelError) as err:
            _register(ctx, BrokenTarget(label, where, str(err)))

    wrapper.__name__ = func.__name__
    wrapper.__qualname__ = func.__qualname__
    wrapper.__doc__ = func.__doc__
    wrapper.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _register(ctx: PackageContext, target: Target) -> None:
    ctx.targets.append(target)


def _str(attr: str, value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise AttrError(f"attribute {attr!r} must be a non-empty string. Received: {value!r}")
    return value


def _callable_ref(attr: str, value: object) -> str:
    text = _str(attr, value)
    module, sep, function = text.partition(":")
    parts = module.split(".")
    if not sep or not function.isidentifier() or not all(p.isidentifier() for p in parts):
        raise AttrError(
            f"attribute {attr!r} must be 'package.module:function'. Received: {value!r}"
        )
    return text


def _file(ctx: PackageContext, attr: str, value: object) -> FileRef:
    text = _str(attr, value)
    if text.startswith("/") or "\\" in text:
        raise AttrError(
            f"attribute {attr!r} must be a path relative to this BUILD.py. Received: {text!r}"
        )
    path = posixpath.normpath(posixpath.join(ctx.package, text))
    if path == ".." or path.startswith("../"):
        raise AttrError(f"attribute {attr!r} points outside the workspace. Received: {text!r}")
    return FileRef(path)


def _files(ctx: PackageContext, attr: str, value: object) -> tuple[FileRef, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise AttrError(f"attribute {attr!r} must be a list of paths. Received: {value!r}")
    return tuple(_file(ctx, f"{attr}[{i}]", v) for i, v in enumerate(value))


def _weights(ctx: PackageContext, attr: str, value: object) -> FileRef | Label:
    text = _str(attr, value)
    if is_label(text):
        return Label.parse(text, ctx.package)
    if not text.endswith(WEIGHTS_SUFFIXES):
        raise AttrError(
            f"attribute {attr!r} must be a .weights.h5 or .keras file, or a label of a "
            f"keras_train target. Received: {text!r}"
        )
    return _file(ctx, attr, text)


def _backend(value: object) -> str:
    if value not in BACKENDS:
        raise AttrError(
            f"attribute 'backend' must be one of {list(BACKENDS)}. Received: {value!r}."
            + did_you_mean(str(value), BACKENDS)
        )
    return str(value)


def _json_value(attr: str, value: object) -> Any:
    """Accept only JSON-like values: they enter the action key."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AttrError(f"attribute {attr!r} must be finite. Received: {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(attr, v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _json_value(attr, v) for k, v in value.items()}
    raise AttrError(f"attribute {attr!r} must hold only JSON-like values. Received: {value!r}")


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
    """
    ctx = current()
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise AttrError(f"attribute 'seed' must be an int. Received: {seed!r}")
    _register(
        ctx,
        TrainTarget(
            label=Label(ctx.package, name),
            where=ctx.call_site(),
            factory=_callable_ref("factory", factory),
            train=_callable_ref("train", train),
            backend=_backend(backend),
            seed=seed,
            data=_files(ctx, "data", data),
            weights=None if weights is None else _weights(ctx, "weights", weights),
            doc=_str("doc", doc, allow_empty=True),
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
) -> None:
    """Declare a model: an architecture plus the weights to load into it.

    name: the target name; exports refer to it as ":name" or "//package:name".
    factory: "module:function" returning a keras.Model with its variables built.
    weights: a .weights.h5 or .keras file relative to this BUILD.py, or the label
        of a keras_train target producing it.
    backend: "tensorflow" (default) or "jax"; the Keras backend the model runs on.
    data: other files the factory reads (vocabularies, configs), relative to this BUILD.py.
    doc: one line shown by `doit list`.
    """
    ctx = current()
    _register(
        ctx,
        ModelTarget(
            label=Label(ctx.package, name),
            where=ctx.call_site(),
            factory=_callable_ref("factory", factory),
            weights=_weights(ctx, "weights", weights),
            backend=_backend(backend),
            data=_files(ctx, "data", data),
            doc=_str("doc", doc, allow_empty=True),
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
    """
    ctx = current()
    label = Label(ctx.package, name)
    model_label = Label.parse(_str("model", model), ctx.package)
    if not isinstance(format, str) or format not in EXPORT_FORMATS:
        raise AttrError(
            f"unknown format {format!r}; known formats: {sorted(EXPORT_FORMATS)}."
            + did_you_mean(str(format), EXPORT_FORMATS)
        )
    saved_model = format == "tf_saved_model"
    if isinstance(endpoints, (str, bytes)) or not isinstance(endpoints, Sequence):
        raise AttrError(f"attribute 'endpoints' must be a list. Received: {endpoints!r}")
    seen: set[str] = set()
    for i, ep in enumerate(endpoints):
        if not isinstance(ep, Endpoint):
            raise AttrError(f"endpoints[{i}] must be endpoint(...). Received: {ep!r}")
        if ep.name in seen:
            raise AttrError(f"endpoint name {ep.name!r} is used twice")
        seen.add(ep.name)
    if variable_collections is not None and not isinstance(variable_collections, Mapping):
        raise AttrError(
            "attribute 'variable_collections' must be a dict of name -> attribute path. "
            f"Received: {variable_collections!r}"
        )
    collections: list[tuple[str, str]] = []
    for key, path in sorted((variable_collections or {}).items()):
        if not isinstance(key, str) or not key.isidentifier():
            raise AttrError(f"variable collection names must be identifiers. Received: {key!r}")
        collections.append((key, _str(f"variable_collections[{key!r}]", path)))
    if isinstance(track, (str, bytes)) or not isinstance(track, Sequence):
        raise AttrError(f"attribute 'track' must be a list of layer names. Received: {track!r}")
    tracked = tuple(_str(f"track[{i}]", t) for i, t in enumerate(track))
    if (
        not isinstance(tolerance, (int, float))
        or isinstance(tolerance, bool)
        or not math.isfinite(tolerance)
        or tolerance < 0
    ):
        raise AttrError(f"attribute 'tolerance' must be a number >= 0. Received: {tolerance!r}")
    kwargs = None
    if jax2tf_kwargs is not None:
        if not isinstance(jax2tf_kwargs, Mapping):
            raise AttrError(
                f"attribute 'jax2tf_kwargs' must be a dict. Received: {jax2tf_kwargs!r}"
            )
        kwargs = tuple(sorted(_json_value("jax2tf_kwargs", dict(jax2tf_kwargs)).items()))
    if not saved_model:
        _call_only(format, endpoints, variable_collections, track, jax2tf_kwargs)
    options = _format_options(format, format_options)
    if serving is not None:
        if not saved_model:
            raise AttrError(
                f"attribute 'serving' needs format 'tf_saved_model': TF Serving loads "
                f"SavedModels. Received: format={format!r}"
            )
        if not isinstance(serving, str) or not SERVING_NAME.fullmatch(serving):
            raise AttrError(
                "attribute 'serving' must be a TF Serving model name: letters, digits, "
                f"'_', '-' or '.', not starting with '_', '-' or '.'. Received: {serving!r}"
            )
    out_path = None
    if out is not None:
        out_path = posixpath.normpath(_str("out", out))
        if out_path in ("", ".") or out_path.startswith(("/", "..")) or "\\" in out_path:
            raise AttrError(f"attribute 'out' must stay inside artifacts/. Received: {out!r}")
        suffix = EXPORT_FORMATS[format].suffix
        if suffix and not out_path.endswith(suffix):
            raise AttrError(
                f"attribute 'out' must end with {suffix!r} for format {format!r}. "
                f"Received: {out!r}"
            )
    _register(
        ctx,
        ExportTarget(
            label=label,
            where=ctx.call_site(),
            model=model_label,
            format=format,
            endpoints=tuple(endpoints),
            variable_collections=tuple(collections),
            track=tracked,
            tolerance=float(tolerance),
            jax2tf_kwargs=kwargs,
            out=out_path,
            doc=_str("doc", doc, allow_empty=True),
            format_options=options,
            serving=serving,
        ),
    )


def _call_only(
    format: str,
    endpoints: Sequence[Endpoint],
    variable_collections: Mapping[str, str] | None,
    track: Sequence[str],
    jax2tf_kwargs: Mapping[str, Any] | None,
) -> None:
    """ONNX, LiteRT and OpenVINO artifacts hold the model's call and nothing else."""
    eps = list(endpoints)
    if len(eps) > 1 or any(ep.fn not in ("call", "__call__") or ep.training for ep in eps):
        raise AttrError(
            f"format {format!r} exports the model's call only: endpoints= may hold one "
            f'endpoint(..., fn="call") giving the input signature. '
            f"Received: endpoints={[ep.name + ':' + ep.fn for ep in eps]}"
        )
    for attr, value in (
        ("variable_collections", variable_collections),
        ("track", track),
        ("jax2tf_kwargs", jax2tf_kwargs),
    ):
        if value:
            raise AttrError(
                f"attribute {attr!r} applies to format 'tf_saved_model' only. "
                f"Received: format={format!r}, {attr}={value!r}"
            )


def _format_options(format: str, value: object) -> tuple[tuple[str, Any], ...]:
    """Check format_options against what the format's exporter accepts; sorted for the key."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise AttrError(f"attribute 'format_options' must be a dict. Received: {value!r}")
    options = _json_value("format_options", dict(value))
    allowed = EXPORT_FORMATS[format].options
    for key in sorted(options):
        if not key.isidentifier():
            raise AttrError(f"format_options keys must be identifiers. Received: {key!r}")
        if allowed is not None and key not in allowed:
            known = f"it accepts {sorted(allowed)}" if allowed else "it takes none"
            raise AttrError(
                f"format {format!r} has no option {key!r}; {known}.{did_you_mean(key, allowed)} "
                f"Received: format_options={value!r}"
            )
        if key in UNDECLARABLE_OPTIONS:
            raise AttrError(
                f"format_options[{key!r}] needs a Python callable, which a BUILD.py cannot "
                "declare as data; export with a script instead. "
                f"Received: format_options={value!r}"
            )
    opset = options.get("opset_version")
    if "opset_version" in options and (
        not isinstance(opset, int) or isinstance(opset, bool) or opset < 1
    ):
        raise AttrError(
            f"format_options['opset_version'] must be an int >= 1. Received: {opset!r}"
        )
    return tuple(sorted(options.items()))
