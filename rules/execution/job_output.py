"""A job's output (prints, warnings, absl and TensorFlow's C++ logging) redirected into its log."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

from rules.core import faults


@contextlib.contextmanager
def captured(log: str) -> Iterator[None]:
    """Point descriptors 1 and 2 at the file `log` (appended to) while the job runs.

    At the descriptor level, not by swapping sys.stdout: TensorFlow's and
    TFLite's C++ logging, tf2onnx's tracebacks through `logging`, absl and
    `warnings` all end up writing to descriptor 2, whatever
    TF_CPP_MIN_LOG_LEVEL says, and a handler that kept a reference to the
    old sys.stderr still reaches the log. With no `log`, nothing changes
    (the server's warm-up, a Ray node that captures by itself).
    """
    if not log:
        yield
        return
    _flush()
    saved = os.dup(1), os.dup(2)
    previous = faults.console_fd
    try:
        target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.dup2(target, 1)
            os.dup2(target, 2)
        finally:
            os.close(target)
        _show_warnings_again()
        # A per-build worker's own stderr is a log too; it knows the console.
        faults.console_fd = saved[1] if previous is None else previous
        yield
    finally:
        faults.console_fd = previous
        _flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def _flush() -> None:
    # Text a job printed must land in its own log, not in the next one's:
    # a worker's sys.stdout is block buffered (it is a pipe or a file).
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _show_warnings_again() -> None:
    """Let a warning shown once in this process show again, in this job's log.

    A per-build worker runs many jobs, and Python shows a "default" warning
    once per code location per process: without this, the second target's
    log would lack a FutureWarning the first target's log has. Bumping the
    filters' version is what warnings.filterwarnings does to invalidate
    every module's registry of shown warnings.
    """
    mutated = getattr(warnings, "_filters_mutated", None)
    if mutated is not None:
        mutated()
