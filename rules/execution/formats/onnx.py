"""onnx: export with Keras (tf2onnx or jax2onnx), run it in ONNX Runtime, compare with Keras."""

from __future__ import annotations

from typing import Any

from rules.core.faults import pause_point
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
    """Export `job.out` as a .onnx file and check it; returns the manifest record."""
    require("onnx", job.backend)
    import onnxruntime

    opts = job.options
    options = dict(opts.get("format_options") or {})
    model = build_model(job.factory, job.weights, opts.get("weights_display"))
    ep = call_endpoint(model, opts)
    signature = [input_specs(tree) for tree in ep["inputs"]]
    try:
        model.export(job.out, format="onnx", verbose=False, input_signature=signature, **options)
    except Exception as err:
        raise export_failed("onnx", err) from err

    pause_point("export")
    session = onnxruntime.InferenceSession(job.out, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(args: list[Any]) -> Any:
        return session.run(None, feed(names, ep, args))

    runtime = f"ONNX Runtime {onnxruntime.__version__}"
    verification = verify_call("onnx", model, ep, run, opts["tolerance"], runtime)
    return {
        "format": "onnx",
        "backend": job.backend,
        "endpoints": [ep],
        "format_options": options,
        "opset": _opset(job.out),
        "inputs": names,
        "verification": verification,
    }


def _opset(path: str) -> int | None:
    """The default-domain opset the converter chose; None if onnx cannot read it."""
    try:
        import onnx

        proto = onnx.load(path, load_external_data=False)
    except Exception:
        return None
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
