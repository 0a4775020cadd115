"""The export server's child: a fork of the warm server that becomes a worker for one job."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from rules.execution.protocol import Job

_PR_SET_PDEATHSIG = 1


def run_child(
    request: Mapping[str, Any], fds: Sequence[int], result_fd: int, server: int, backend: str
) -> NoReturn:
    """Run the request's job with `fds` as stdout and stderr; write its result to `result_fd`.

    The caller (the server, just after fork) has closed everything of its
    own but these descriptors. Never returns: the process exits here.
    """
    code = 1
    try:
        _die_with(server)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
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
        root = request["root"]
        os.chdir(root)
        sys.path.insert(0, root)
        # sys.stdout was made for the server's log file, so it is block
        # buffered; a terminal gets print() lines as they come, as before.
        reconfigure = getattr(sys.stdout, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=os.isatty(1))
        from rules.execution.worker import run_job

        result = run_job(Job(**request["job"]))
        _write_all(result_fd, result.to_line())
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


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


def _die_with(parent: int) -> None:
    """Get SIGKILL when the server dies, so an orphaned export never races its retry."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
