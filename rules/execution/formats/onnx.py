"""onnx: export with Keras (tf2onnx or jax2onnx), run it in ONNX Runtime, compare with Keras."""

from __future__ import annotations

from typing import Any

from rules.core.job import ExportJob
from rules.core.specs import Endpoint
from rules.execution.formats import call_only
from rules.execution.formats.call_only import Adapter, Opened
from rules.execution.formats.common import feed


def export(job: ExportJob, out: str) -> dict[str, Any]:
    """Export `out` as a .onnx file and check it; returns the manifest record."""
    return call_only.export(job, out, Adapter(_write, _open))


def _write(model: Any, out: str, signature: list[Any], job: ExportJob) -> None:
    model.export(out, format="onnx", verbose=False, input_signature=signature,
                 **job.format_options.thaw())


def _open(out: str, ep: Endpoint) -> Opened:
    import onnxruntime

    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(args: list[Any]) -> Any:
        return session.run(None, feed(names, ep, args))

    return Opened(names, run, f"ONNX Runtime {onnxruntime.__version__}", {"opset": _opset(out)})


def _opset(path: str) -> int | None:
    """The default-domain opset the converter chose; None if onnx cannot read it."""
    try:
        import onnx

        proto = onnx.load(path, load_external_data=False)
    except Exception:
        return None
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
