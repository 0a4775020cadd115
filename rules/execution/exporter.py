"""Run a keras_export job with the module of its format (rules.execution.formats)."""

from __future__ import annotations

import importlib
from typing import Any

from rules.execution.failures import JobFailure
from rules.execution.protocol import Job

# Module per format, imported on first use: each pulls in its own converter.
MODULES = {
    "tf_saved_model": "rules.execution.formats.saved_model",
    "onnx": "rules.execution.formats.onnx",
    "litert": "rules.execution.formats.litert",
    "openvino": "rules.execution.formats.openvino",
}


def export(job: Job) -> dict[str, Any]:
    """Export and verify one target; returns the record stored in the manifest."""
    fmt = job.options.get("format")
    if fmt not in MODULES:
        raise JobFailure(
            "ProtocolError", f"no exporter for format {fmt!r}; known: {sorted(MODULES)}"
        )
    record: dict[str, Any] = importlib.import_module(MODULES[fmt]).export(job)
    return record
