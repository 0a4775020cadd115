"""openvino: export OpenVINO IR with Keras, run it in OpenVINO Runtime, compare with Keras."""

from __future__ import annotations

import os
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

# The artifact is a folder holding this pair, the layout OpenVINO Model Server
# expects inside a version folder.
XML = "model.xml"
# The CPU plugin may infer in bfloat16 where the hardware has it, which is a
# deployment choice, not a property of the artifact: check at float32.
CHECK_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def export(job: Job) -> dict[str, Any]:
    """Export `job.out` as a folder with model.xml and model.bin and check it."""
    require("openvino", job.backend)
    import openvino

    opts = job.options
    model = build_model(job.factory, job.weights, opts.get("weights_display"))
    ep = call_endpoint(model, opts)
    signature = [input_specs(tree) for tree in ep["inputs"]]
    os.makedirs(job.out)
    xml = os.path.join(job.out, XML)
    try:
        model.export(xml, format="openvino", verbose=False, input_signature=signature)
    except Exception as err:
        raise export_failed("openvino", err) from err

    pause_point("export")
    compiled = openvino.Core().compile_model(xml, "CPU", CHECK_CONFIG)
    names = [port.get_any_name() for port in compiled.inputs]

    def run(args: list[Any]) -> Any:
        result = compiled(feed(names, ep, args))
        return [result[port] for port in compiled.outputs]

    runtime = f"OpenVINO Runtime {openvino.__version__} (CPU, f32)"
    verification = verify_call("openvino", model, ep, run, opts["tolerance"], runtime)
    return {
        "format": "openvino",
        "backend": job.backend,
        "endpoints": [ep],
        "inputs": names,
        "verification": verification,
    }
