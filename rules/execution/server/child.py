"""The export server's child: a fork of the warm server that becomes a worker for one job.

A spare child first runs a warm-up export of a built-in model, then waits
for its job. The warm-up initialises TensorFlow's runtime (and JAX's XLA
client) and fills Keras's tracing caches; it loads no user code, and
run_job's clear_session() resets Keras's naming before the real job, so the
job's layer names (and checkpoint keys) are those of a fresh worker. Only
the runtime reads its environment during the warm-up, before the caller's
is applied; the variables that change numerics are in the fingerprint.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rules.core.job import ExportJob
from rules.execution.protocol import JobRequest, encode
from rules.execution.server.protocol import MAX_MESSAGE

_PR_SET_PDEATHSIG = 1


def run_child(
    request: Mapping[str, Any],
    fds: Sequence[int],
    result_fd: int,
    server: int,
    backend: str,
    *,
    fresh: bool = True,
) -> NoReturn:
    """Run the request's job with `fds` as stdout and stderr; write its result to `result_fd`.

    The caller (the server just after fork, or a spare: not `fresh`) has
    closed everything of its own but these descriptors. Never returns: the
    process exits here, running the exit handlers the job registered.
    """
    code = 1
    try:
        if fresh:
            _become_child(server)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (devnull, *fds):
            os.close(fd)
        # Like a per-build worker: the caller's environment, the workspace
        # as cwd and first on sys.path, output where the build's goes.
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ["KERAS_BACKEND"] = backend
        # Computed from the server's TMPDIR if it was ever asked for.
        tempfile.tempdir = None
        root = request["root"]
        os.chdir(root)
        sys.path.insert(0, root)
        # sys.stdout was made for the server's log file, so it is block
        # buffered; a terminal gets print() lines as they come, as before.
        reconfigure = getattr(sys.stdout, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=os.isatty(1))
        from rules.execution.worker import run_job

        result = run_job(JobRequest.from_wire(request))
        _write_all(result_fd, encode(result.to_wire()))
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        _exit(code)


def run_spare(channel: socket.socket, server: int, backend: str, folder: Path) -> NoReturn:
    """Warm up, say "ready" on `channel`, then run the one job the server sends on it."""
    try:
        _become_child(server)
        channel.settimeout(None)
        warm_up(folder, backend)
        channel.sendall(b"ready\n")
        request, fds = _receive(channel)
    except BaseException:
        traceback.print_exc()
        _exit(1)
    if request is None:
        _exit(0)
    run_child(request, fds, channel.fileno(), server, backend, fresh=False)


def warm_up(folder: Path, backend: str) -> None:
    """Export, reload and check warmup_model() exactly as a keras_export job would."""
    from rules.execution.worker import run_job

    out = folder / f".warm-up-{os.getpid()}"
    job = ExportJob(label="(warm-up)", backend=backend,  # type: ignore[arg-type]
                    factory="rules.execution.server.child:warmup_model",
                    format="tf_saved_model", tolerance=1e-4)
    try:
        result = run_job(JobRequest(job, str(out)))
        if not result.ok:
            print(f"warm-up failed: {result.message}", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def warmup_model() -> Any:
    """The warm-up's model: small, and built from layers most models use."""
    import keras

    inputs = keras.Input((8,), name="features")
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(hidden))


def _receive(channel: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One request line and the descriptors sent with it; (None, []) if the server hung up."""
    buffer, fds = b"", []
    while b"\n" not in buffer and len(buffer) < MAX_MESSAGE:
        data, received, _, _ = socket.recv_fds(channel, 1 << 16, 2)
        fds.extend(received)
        if not data:
            return None, []
        buffer += data
    request: dict[str, Any] = json.loads(buffer.partition(b"\n")[0])
    return request, fds


def describe(status: int) -> str:
    """How a child ended, from its wait status: 'was killed by SIGSEGV', 'exited with code 1'."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(sig).name}"
        return f"was killed by signal {sig}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _become_child(server: int) -> None:
    """Drop what belongs to the server: its SIGTERM handler and its exit handlers."""
    _die_with(server)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The server's exit handlers are for the server; the child's own (such
    # as autograph removing its generated files from /tmp) run in _exit.
    clear = getattr(atexit, "_clear", None)
    if clear is not None:
        clear()


def _exit(code: int) -> NoReturn:
    """Exit without the server's cleanup (os._exit), but with the child's own handlers."""
    with contextlib.suppress(BaseException):
        run = getattr(atexit, "_run_exitfuncs", None)
        if run is not None:
            run()
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _die_with(parent: int) -> None:
    """Get SIGKILL when the server dies, so an orphaned export never races its retry."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
