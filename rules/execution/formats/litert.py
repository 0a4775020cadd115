"""litert: export a .tflite with Keras's converter, run it in the LiteRT interpreter, compare."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rules.core.faults import pause_point
from rules.execution.failures import JobFailure
from rules.execution.formats.common import (
    call_endpoint,
    export_failed,
    feed,
    input_specs,
    require,
    verify_call,
)
from rules.execution.model_loading import build_model
from rules.execution.protocol import Job


def export(job: Job) -> dict[str, Any]:
    """Export `job.out` (a .tflite path) and check it; returns the manifest record."""
    require("litert", job.backend)
    from ai_edge_litert.interpreter import Interpreter

    opts = job.options
    declared = dict(opts.get("format_options") or {})
    model = build_model(job.factory, job.weights, opts.get("weights_display"))
    ep = call_endpoint(model, opts)
    signature = [input_specs(tree) for tree in ep["inputs"]]
    converter_settings = converter_options(declared)
    try:
        model.export(
            job.out, format="litert", verbose=False, input_signature=signature,
            **converter_settings,
        )
    except Exception as err:
        raise export_failed("litert", err) from err

    pause_point("export")
    interpreter = Interpreter(model_path=job.out)
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
    verification = verify_call("litert", model, ep, run, opts["tolerance"], runtime)
    return {
        "format": "litert",
        "backend": job.backend,
        "endpoints": [ep],
        "format_options": declared,
        "signature": key,
        "inputs": names,
        "verification": verification,
    }


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
