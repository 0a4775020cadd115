"""A pool of long-lived worker processes, one or more per Keras backend.

KERAS_BACKEND is fixed when keras is first imported, so each worker serves
one backend. A worker serves many jobs, so a build pays the TensorFlow import
once per worker rather than once per target. Under `doit -n N` several threads
ask at once; each gets its own worker, so at most N workers run per backend.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from rules.execution.protocol import Job, JobResult


class Worker:
    """One worker subprocess speaking JSON lines over a private pipe."""

    def __init__(self, root: Path, backend: str) -> None:
        self.backend = backend
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env["KERAS_BACKEND"] = backend
        # TensorFlow's C++ INFO/WARNING lines drown the build log; users can lower it.
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # Results travel on a dedicated pipe so that user code printing to
        # stdout can never corrupt the protocol.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rules.execution.worker", str(root), str(write_fd)],
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            env=env,
            cwd=root,
        )
        os.close(write_fd)
        self._results = os.fdopen(read_fd, "rb")

    def run(self, job: Job) -> JobResult:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(job.to_line())
            self.process.stdin.flush()
            line = self._results.readline()
        except (BrokenPipeError, OSError):
            line = b""
        if not line:
            code = self.process.wait()
            return JobResult.failure(
                "WorkerCrashed",
                f"the {self.backend} worker exited with code {code} while building; "
                "see its output above (out of memory or a crash in native code?)",
            )
        return JobResult.from_line(line)

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._results.close()


class WorkerPool:
    """Hands out idle workers per backend and starts new ones on demand."""

    def __init__(self, root: Path, on_start: Callable[[str], None] | None = None) -> None:
        self._root = root
        self._idle: dict[str, list[Worker]] = {}
        self._all: list[Worker] = []
        self._lock = threading.Lock()
        self._on_start = on_start
        atexit.register(self.close)

    def run(self, job: Job) -> JobResult:
        worker = self._checkout(job.backend)
        result = worker.run(job)
        with self._lock:
            if worker.alive():
                self._idle[job.backend].append(worker)
            else:
                self._all.remove(worker)
        return result

    def _checkout(self, backend: str) -> Worker:
        with self._lock:
            idle = self._idle.setdefault(backend, [])
            while idle:
                worker = idle.pop()
                if worker.alive():
                    return worker
                self._all.remove(worker)
        if self._on_start is not None:
            self._on_start(backend)
        worker = Worker(self._root, backend)
        with self._lock:
            self._all.append(worker)
        return worker

    @property
    def started(self) -> int:
        with self._lock:
            return len(self._all)

    def close(self) -> None:
        with self._lock:
            workers, self._all, self._idle = self._all, [], {}
        for worker in workers:
            worker.close()
