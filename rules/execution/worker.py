"""Worker process: imports Keras once for one backend, then runs jobs read from stdin."""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any

from rules.core import faults
from rules.core.backends import BACKENDS
from rules.core.job import DeclaredInputs, ExportJob
from rules.execution import audit, output_digests
from rules.execution.failures import JobFailure, user_traceback
from rules.execution.job_output import captured
from rules.execution.protocol import JobRequest, JobResult, decode, encode


def run_job(request: JobRequest) -> JobResult:
    """Run one job; every exception becomes a JobResult so the worker survives it.

    The process's working directory is the workspace root. With declared
    inputs in the request, what the job reads is audited from the factory
    call through export and verification. With a log in the request, all the
    job prints goes there, not to the build's console.
    """
    with captured(request.log):
        return _run(request)


def _run(request: JobRequest) -> JobResult:
    import keras

    job = request.job
    # Fresh naming and graph state per job: layer names (and so checkpoints'
    # keys) must not depend on which targets this worker built before.
    keras.backend.clear_session()
    started = time.perf_counter()
    if request.declared is not None:
        audit.begin(os.getcwd())
    try:
        if keras.backend.backend() != job.backend:
            raise JobFailure(
                "BackendError",
                f"worker runs Keras backend {keras.backend.backend()!r}, job needs {job.backend!r}",
            )
        if isinstance(job, ExportJob):
            from rules.execution.exporter import export

            record: dict[str, Any] = export(job, request.out)
        else:
            from rules.execution.trainer import train

            record = train(job, request.out)
    except JobFailure as failure:
        return JobResult.failure(failure.kind, failure.message, failure.details)
    except SystemExit as exit_:
        return JobResult.failure(
            "JobExited",
            f"the model code called sys.exit({exit_.code!r}) during the job; a factory, train "
            "or endpoint function must return, not exit",
            user_traceback(exit_),
        )
    except Exception as err:
        return JobResult.failure(
            "InternalError", f"{type(err).__name__}: {err}", user_traceback(err)
        )
    finally:
        recording = audit.end() if request.declared is not None else None
        hashed = output_digests.collect(request.out)
    if recording is not None and request.declared is not None:
        problems = _undeclared(recording, request.declared, request.out)
        if problems and not job.warn_undeclared_inputs:
            return JobResult.failure(
                "UndeclaredInput",
                "; ".join(problems) + ' (undeclared_inputs = "warn" in [tool.rules_keras] '
                "makes this a warning while you migrate)",
            )
        if problems:
            record["warnings"] = [*record.get("warnings", ()),
                                  *(f"{job.label}: {p}" for p in problems)]
    record["seconds"] = round(time.perf_counter() - started, 3)
    return JobResult(True, record, hashed=tuple(hashed))


def _undeclared(recording: audit.Recording, declared: DeclaredInputs, out: str) -> list[str]:
    """What the job read or imported from the workspace without declaring it, with the fix."""
    findings = audit.undeclared(
        recording, root=os.getcwd(), declared=declared.files, ignored=declared.ignored, out=out
    )
    return audit.describe(findings, declared.owner)


def answer(line: bytes) -> JobResult:
    """The reply to one request line: a ping's (imports done) or a job's."""
    try:
        message = decode(line)
        if message.get("op") == "ping":
            return JobResult(True)
        request = JobRequest.from_wire(message)
    except (ValueError, KeyError, TypeError) as err:
        return JobResult.failure("ProtocolError", f"malformed request: {err}")
    return run_job(request)


def main(argv: list[str]) -> int:
    root, fd = argv[1], int(argv[2])
    results = os.fdopen(fd, "wb", buffering=0)
    if len(argv) > 3:
        faults.console_fd = int(argv[3])
    sys.path.insert(0, root)
    os.chdir(root)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError as err:
        hint = BACKENDS[backend].install if backend in BACKENDS else BACKENDS["tensorflow"].install
        failure = JobResult.failure(
            "BackendMissing", f"the {backend} backend is not installed ({err}); {hint}"
        )
        for _ in sys.stdin.buffer:
            results.write(encode(failure.to_wire()))
        return 0
    # clear_session() runs a full collection before every job; without this it
    # walks the ~350k objects the TensorFlow import left, 0.17 s per export.
    gc.freeze()
    try:
        for line in sys.stdin.buffer:
            if line.strip():
                results.write(encode(answer(line).to_wire()))
    except (BrokenPipeError, KeyboardInterrupt):
        # The build went away (killed, or Ctrl-C): nobody wants the result,
        # and a traceback here would look like a crash of ours.
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
