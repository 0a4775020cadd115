"""openvino: export OpenVINO IR with Keras, run it in OpenVINO Runtime, compare with Keras."""

from __future__ import annotations

import os
from typing import Any

from rules.core.job import ExportJob
from rules.core.specs import Endpoint
from rules.execution.formats import call_only
from rules.execution.formats.call_only import Adapter, Opened
from rules.execution.formats.common import feed

# The artifact is a folder holding this pair, the layout OpenVINO Model Server
# expects inside a version folder.
XML = "model.xml"
# The CPU plugin may infer in bfloat16 where the hardware has it, which is a
# deployment choice, not a property of the artifact: check at float32.
CHECK_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def export(job: ExportJob, out: str) -> dict[str, Any]:
    """Export `out` as a folder with model.xml and model.bin and check it."""
    return call_only.export(job, out, Adapter(_write, _open))


def _write(model: Any, out: str, signature: list[Any], job: ExportJob) -> None:
    os.makedirs(out)
    model.export(os.path.join(out, XML), format="openvino", verbose=False,
                 input_signature=signature)


def _open(out: str, ep: Endpoint) -> Opened:
    import openvino

    compiled = openvino.Core().compile_model(os.path.join(out, XML), "CPU", CHECK_CONFIG)
    names = [port.get_any_name() for port in compiled.inputs]

    def run(args: list[Any]) -> Any:
        result = compiled(feed(names, ep, args))
        return [result[port] for port in compiled.outputs]

    return Opened(names, run, f"OpenVINO Runtime {openvino.__version__} (CPU, f32)")
