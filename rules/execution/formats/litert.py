"""litert: export a .tflite with Keras's converter, run it in the LiteRT interpreter, compare."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rules.core.job import ExportJob
from rules.core.specs import Endpoint
from rules.execution.failures import JobFailure
from rules.execution.formats import call_only
from rules.execution.formats.call_only import Adapter, Opened
from rules.execution.formats.common import feed


def export(job: ExportJob, out: str) -> dict[str, Any]:
    """Export `out` (a .tflite path) and check it; returns the manifest record."""
    return call_only.export(job, out, Adapter(_write, _open))


def _write(model: Any, out: str, signature: list[Any], job: ExportJob) -> None:
    settings = converter_options(job.format_options.thaw())
    model.export(out, format="litert", verbose=False, input_signature=signature, **settings)


def _open(out: str, ep: Endpoint) -> Opened:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=out)
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        raise JobFailure(
            "VerificationError",
            f"expected one signature in the .tflite file. Received: {sorted(signatures)}",
        )
    key = next(iter(signatures))
    runner = interpreter.get_signature_runner(key)
    names = list(signatures[key]["inputs"])

    def run(args: list[Any]) -> Any:
        outputs = runner(**feed(names, ep, args))
        # Signature outputs are a dict output_0, output_1, ...: order them by number.
        return [outputs[k] for k in sorted(outputs, key=_number)]

    runtime = f"LiteRT interpreter (ai-edge-litert {_version('ai-edge-litert')})"
    return Opened(names, run, runtime, {"signature": key})


def converter_options(declared: Mapping[str, Any]) -> dict[str, Any]:
    """TFLiteConverter settings from their JSON form in the BUILD file.

    Names stand for the TensorFlow objects a BUILD.py cannot hold:
    optimizations=["DEFAULT"] for tf.lite.Optimize.DEFAULT, target_spec's
    supported_ops=["TFLITE_BUILTINS"] for tf.lite.OpsSet members and
    supported_types=["float16"] for tf.float16. Other values pass as they are.
    """
    import tensorflow as tf

    settings = dict(declared)
    if "optimizations" in settings:
        settings["optimizations"] = [
            _member(tf.lite.Optimize, name, "optimizations")
            for name in _names(settings["optimizations"], "optimizations")
        ]
    spec = settings.get("target_spec")
    if spec is not None:
        if not isinstance(spec, Mapping):
            raise JobFailure(
                "OptionError", f"format_options['target_spec'] must be a dict. Received: {spec!r}"
            )
        spec = dict(spec)
        if "supported_ops" in spec:
            spec["supported_ops"] = {
                _member(tf.lite.OpsSet, name, "target_spec.supported_ops")
                for name in _names(spec["supported_ops"], "target_spec.supported_ops")
            }
        if "supported_types" in spec:
            spec["supported_types"] = [
                tf.as_dtype(name)
                for name in _names(spec["supported_types"], "target_spec.supported_types")
            ]
        settings["target_spec"] = spec
    return settings


def _names(value: Any, attr: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise JobFailure(
            "OptionError", f"format_options {attr} must be a list of names. Received: {value!r}"
        )
    return value


def _member(enum: Any, name: str, attr: str) -> Any:
    try:
        return enum[name]
    except KeyError:
        known = [m.name for m in enum]
        raise JobFailure(
            "OptionError", f"format_options {attr}: unknown name {name!r}; known: {known}"
        ) from None


def _number(key: str) -> tuple[int, str]:
    match = re.search(r"(\d+)$", key)
    return (int(match.group(1)) if match else -1, key)


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
