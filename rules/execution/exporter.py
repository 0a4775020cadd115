"""Run a keras_export job with the module of its format (rules.execution.formats)."""

from __future__ import annotations

import importlib
from typing import Any

from rules.core.formats import EXPORT_FORMATS
from rules.core.job import ExportJob
from rules.execution.failures import JobFailure


def export(job: ExportJob, out: str) -> dict[str, Any]:
    """Export and verify one target into `out`; returns the record stored in the manifest."""
    fmt = EXPORT_FORMATS.get(job.format)
    if fmt is None:
        raise JobFailure(
            "ProtocolError",
            f"no exporter for format {job.format!r}; known: {sorted(EXPORT_FORMATS)}",
        )
    # Imported on first use: each format module pulls in its own converter.
    module = importlib.import_module(f"rules.execution.formats.{fmt.exporter or fmt.name}")
    record: dict[str, Any] = module.export(job, out)
    return record
