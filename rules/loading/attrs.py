"""Attribute checks shared by the rule functions: each returns the checked value or raises.

Every message names the attribute and what was expected, and shows what was
received; the rule wrapper (rules.loading.rules) adds the target's label and
the BUILD.py line.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rules.core.backends import BACKENDS
from rules.core.errors import did_you_mean
from rules.core.formats import EXPORT_FORMATS
from rules.core.frozen import FrozenMap
from rules.core.settings import ConfigError, parse_size
from rules.core.specs import Endpoint
from rules.loading.context import PackageContext
from rules.loading.labels import Label, is_label
from rules.loading.targets import FileRef

# LiteRT converter settings that need Python objects a BUILD.py cannot declare as data.
UNDECLARABLE_OPTIONS = frozenset({"representative_dataset"})
# TF Serving model names become folder names and config entries: keep them plain.
SERVING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
WEIGHTS_SUFFIXES = (".weights.h5", ".keras")
# resources= names with a meaning of their own; any other name is a custom
# resource of the cluster. Ray's own names for CPUs and GPUs are refused, so
# that a target says num_cpus=2, not CPU=2 (which Ray would reject later).
RESOURCE_NAMES = ("num_cpus", "num_gpus", "memory")


class AttrError(ValueError):
    """One attribute of one declaration is wrong; the rule turns it into a BrokenTarget."""


def string(attr: str, value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise AttrError(f"attribute {attr!r} must be a non-empty string. Received: {value!r}")
    return value


def callable_ref(attr: str, value: object) -> str:
    text = string(attr, value)
    module, sep, function = text.partition(":")
    parts = module.split(".")
    if not sep or not function.isidentifier() or not all(p.isidentifier() for p in parts):
        raise AttrError(
            f"attribute {attr!r} must be 'package.module:function'. Received: {value!r}"
        )
    return text


def file_ref(ctx: PackageContext, attr: str, value: object) -> FileRef:
    text = string(attr, value)
    if text.startswith("/") or "\\" in text:
        raise AttrError(
            f"attribute {attr!r} must be a path relative to this BUILD.py. Received: {text!r}"
        )
    path = posixpath.normpath(posixpath.join(ctx.package, text))
    if path == ".." or path.startswith("../"):
        raise AttrError(f"attribute {attr!r} points outside the workspace. Received: {text!r}")
    return FileRef(path)


def file_refs(ctx: PackageContext, attr: str, value: object) -> tuple[FileRef, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise AttrError(f"attribute {attr!r} must be a list of paths. Received: {value!r}")
    return tuple(file_ref(ctx, f"{attr}[{i}]", v) for i, v in enumerate(value))


def weights(ctx: PackageContext, attr: str, value: object) -> FileRef | Label:
    text = string(attr, value)
    if is_label(text):
        return Label.parse(text, ctx.package)
    if not text.endswith(WEIGHTS_SUFFIXES):
        raise AttrError(
            f"attribute {attr!r} must be a .weights.h5 or .keras file, or a label of a "
            f"keras_train target. Received: {text!r}"
        )
    return file_ref(ctx, attr, text)


def sample_inputs(ctx: PackageContext, value: object) -> FileRef | str | None:
    """A "module:function" returning samples per endpoint, or a .npz file in the package."""
    if value is None:
        return None
    text = string("sample_inputs", value)
    if text.endswith(".npz"):
        return file_ref(ctx, "sample_inputs", text)
    if ":" in text:
        return callable_ref("sample_inputs", text)
    raise AttrError(
        "attribute 'sample_inputs' must be 'package.module:function' or a .npz file "
        f"relative to this BUILD.py. Received: {value!r}"
    )


def optional_bool(attr: str, value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise AttrError(f"attribute {attr!r} must be True or False. Received: {value!r}")
    return value


def backend(value: object) -> str:
    if value not in BACKENDS:
        raise AttrError(
            f"attribute 'backend' must be one of {list(BACKENDS)}. Received: {value!r}."
            + did_you_mean(str(value), BACKENDS)
        )
    return str(value)


def json_value(attr: str, value: object) -> Any:
    """Accept only JSON-like values: they enter the action key."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AttrError(f"attribute {attr!r} must be finite. Received: {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        return [json_value(attr, v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: json_value(attr, v) for k, v in value.items()}
    raise AttrError(f"attribute {attr!r} must hold only JSON-like values. Received: {value!r}")


def export_format(value: object) -> str:
    if not isinstance(value, str) or value not in EXPORT_FORMATS:
        raise AttrError(
            f"unknown format {value!r}; known formats: {sorted(EXPORT_FORMATS)}."
            + did_you_mean(str(value), EXPORT_FORMATS)
        )
    return value


def endpoints(value: object) -> tuple[Endpoint, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise AttrError(f"attribute 'endpoints' must be a list. Received: {value!r}")
    seen: set[str] = set()
    for i, ep in enumerate(value):
        if not isinstance(ep, Endpoint):
            raise AttrError(f"endpoints[{i}] must be endpoint(...). Received: {ep!r}")
        if ep.name in seen:
            raise AttrError(f"endpoint name {ep.name!r} is used twice")
        seen.add(ep.name)
    return tuple(value)


def variable_collections(value: object) -> tuple[tuple[str, str], ...]:
    if value is not None and not isinstance(value, Mapping):
        raise AttrError(
            "attribute 'variable_collections' must be a dict of name -> attribute path. "
            f"Received: {value!r}"
        )
    collections: list[tuple[str, str]] = []
    for key, path in sorted((value or {}).items()):
        if not isinstance(key, str) or not key.isidentifier():
            raise AttrError(f"variable collection names must be identifiers. Received: {key!r}")
        collections.append((key, string(f"variable_collections[{key!r}]", path)))
    return tuple(collections)


def track(value: object) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise AttrError(f"attribute 'track' must be a list of layer names. Received: {value!r}")
    return tuple(string(f"track[{i}]", t) for i, t in enumerate(value))


def tolerance(value: object) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise AttrError(f"attribute 'tolerance' must be a number >= 0. Received: {value!r}")
    return float(value)


def jax2tf_kwargs(value: object) -> tuple[tuple[str, Any], ...] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise AttrError(f"attribute 'jax2tf_kwargs' must be a dict. Received: {value!r}")
    return tuple(sorted(json_value("jax2tf_kwargs", dict(value)).items()))


def serving(format: str, value: object) -> str | None:
    if value is None:
        return None
    if format != "tf_saved_model":
        raise AttrError(
            f"attribute 'serving' needs format 'tf_saved_model': TF Serving loads "
            f"SavedModels. Received: format={format!r}"
        )
    if not isinstance(value, str) or not SERVING_NAME.fullmatch(value):
        raise AttrError(
            "attribute 'serving' must be a TF Serving model name: letters, digits, "
            f"'_', '-' or '.', not starting with '_', '-' or '.'. Received: {value!r}"
        )
    return value


def out(format: str, value: object) -> str | None:
    if value is None:
        return None
    path = posixpath.normpath(string("out", value))
    if path in ("", ".") or path.startswith(("/", "..")) or "\\" in path:
        raise AttrError(f"attribute 'out' must stay inside artifacts/. Received: {value!r}")
    if any(part.startswith(".") for part in path.split("/")):
        # Hidden names are the build's own: staging and replaced copies.
        raise AttrError(f"attribute 'out' must not name a hidden file. Received: {value!r}")
    suffix = EXPORT_FORMATS[format].suffix
    if suffix and not path.endswith(suffix):
        raise AttrError(
            f"attribute 'out' must end with {suffix!r} for format {format!r}. Received: {value!r}"
        )
    return path


def call_only(
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


def format_options(format: str, value: object) -> tuple[tuple[str, Any], ...]:
    """Check format_options against what the format's exporter accepts; sorted for the key."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise AttrError(f"attribute 'format_options' must be a dict. Received: {value!r}")
    options = json_value("format_options", dict(value))
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


def resources(value: object) -> FrozenMap:
    """Where the action may run: {"num_cpus": 2, "num_gpus": 1, "memory": "16G", "<custom>": 1}.

    Counts are numbers >= 0 and, as Ray requires, whole numbers above 1;
    memory is a size ('16G', '512M') or bytes. A name close to a built-in one
    but not it (num_cpu) is an error rather than a custom resource nobody has.
    """
    if value is None:
        return FrozenMap()
    if not isinstance(value, Mapping):
        raise AttrError(f"attribute 'resources' must be a dict. Received: {value!r}")
    checked: dict[str, float | int] = {}
    for name, amount in value.items():
        where = f"resources[{name!r}]"
        if not isinstance(name, str) or not name:
            raise AttrError(f"attribute 'resources' keys must be non-empty strings. "
                            f"Received: {name!r}")
        instead = _builtin_for(name)
        if instead:
            raise AttrError(f"attribute {where}: say {instead!r}. "
                            f"Received: resources={dict(value)!r}")
        if name not in RESOURCE_NAMES and did_you_mean(name, RESOURCE_NAMES):
            raise AttrError(f"attribute 'resources' has no built-in {name!r}."
                            f"{did_you_mean(name, RESOURCE_NAMES)} Custom resource names must "
                            f"not look like {list(RESOURCE_NAMES)}. Received: resources="
                            f"{dict(value)!r}")
        if name == "memory":
            try:
                checked[name] = parse_size(amount, f"attribute {where}")
            except ConfigError as err:
                raise AttrError(str(err)) from None
            continue
        if (
            not isinstance(amount, (int, float))
            or isinstance(amount, bool)
            or not math.isfinite(amount)
            or amount < 0
        ):
            raise AttrError(f"attribute {where} must be a number >= 0. Received: {amount!r}")
        if amount > 1 and not float(amount).is_integer():
            raise AttrError(f"attribute {where} must be a whole number when above 1 (Ray "
                            f"schedules fractions of one unit only). Received: {amount!r}")
        checked[name] = amount
    return FrozenMap(checked)


def _builtin_for(name: str) -> str:
    """The built-in name meant by Ray's own resource names (CPU, GPU) or their plurals."""
    plain = name.lower().removesuffix("s")
    if plain in ("cpu", "gpu"):
        return f"num_{plain}s"
    return "memory" if name == "object_store_memory" else ""
