"""The skeleton every call-only format shares: build, export the call, open the runtime, verify.

ONNX, LiteRT and OpenVINO artifacts hold the model's call and nothing else,
and each is proven the same way: the model is built from its factory and
weights, exported by Keras with the endpoint's input signature, opened in the
runtime that will serve it, fed the same deterministic sample as Keras, and
compared. A format module supplies only its adapter: how Keras writes the
artifact, and how its runtime opens and runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.core.faults import pause_point
from rules.core.job import ExportJob
from rules.core.specs import Endpoint
from rules.execution import output_digests
from rules.execution.failures import JobFailure, user_traceback
from rules.execution.formats.common import (
    call_endpoint,
    export_failed,
    first_line,
    input_specs,
    require,
)
from rules.execution.formats.diagnosis import converter_first, watching
from rules.execution.model_loading import build_model
from rules.execution.samples import Sampled, for_job
from rules.execution.verify import check_call, conclude


@dataclass(frozen=True)
class Opened:
    """An artifact loaded in its runtime: its input names, a call, and what ran it."""

    inputs: list[str]
    run: Callable[[list[Any]], Any]
    runtime: str
    record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Adapter:
    """What one format brings: `write(model, out, signature, job)` and `open(out, ep)`."""

    write: Callable[[Any, str, list[Any], ExportJob], None]
    open: Callable[[str, Endpoint], Opened]


def export(job: ExportJob, out: str, adapter: Adapter) -> dict[str, Any]:
    """Export `job` to `out` with the adapter and check it; returns the manifest record."""
    require(job.format, job.backend)
    model = build_model(job.factory, job.weights)
    ep = call_endpoint(model, job)
    sampled = for_job(job, model, [ep])[ep.name]
    signature = [input_specs(tree) for tree in ep.inputs]
    with watching() as converter:
        try:
            adapter.write(model, out, signature, job)
        except JobFailure:
            raise
        except Exception as err:
            raise export_failed(job.format, err) from err
    pause_point("export")
    output_digests.written(out)
    try:
        opened = adapter.open(out, ep)
        verification, warnings = verify(job, model, ep, opened, sampled)
    except JobFailure as failure:
        raise converter_first(failure, converter, job.format) from failure
    except Exception as err:
        # The runtime's own frames say nothing its message does not.
        refused = JobFailure("RuntimeError", f"the {job.format} artifact could not be opened: "
                             f"{type(err).__name__}: {first_line(err)}")
        raise converter_first(refused, converter, job.format) from err
    record = {
        "format": job.format,
        "backend": job.backend,
        "endpoints": [ep.to_json()],
        "format_options": job.format_options.thaw(),
        "inputs": opened.inputs,
        **opened.record,
        "verification": verification,
    }
    if warnings:
        record["warnings"] = warnings
    return record


def verify(
    job: ExportJob, model: Any, ep: Endpoint, opened: Opened, sampled: Sampled
) -> tuple[dict[str, Any], list[str]]:
    """Run the parity check: the manifest's verification record and warnings, or fail the job."""
    fmt, runtime, tolerance = job.format, opened.runtime, job.tolerance
    try:
        check = check_call(ep, lambda *args: model(*args, training=False), opened.run, tolerance,
                           sampled)
    except JobFailure:
        raise
    except Exception as err:
        raise JobFailure(
            "VerificationError",
            f"running the {fmt} artifact in {runtime} on a sample input failed: "
            f"{type(err).__name__}: {first_line(err)}",
            user_traceback(err),
        ) from err
    if not check["ok"]:
        raise JobFailure(
            "VerificationMismatch",
            f"the {fmt} artifact, run in {runtime}, differs from Keras: max abs diff "
            f"{check['max_abs_diff']:.3g} > tolerance {tolerance:g} (raise `tolerance` on the "
            "target if this is expected numerical noise, e.g. from quantization)",
        )
    return conclude(job, runtime, [check])
