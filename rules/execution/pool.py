"""Where jobs run: the workspace's warm export server, else this build's own workers.

KERAS_BACKEND is fixed when keras is first imported, so each worker serves
one backend. A worker serves many jobs, so a build pays the TensorFlow import
once per worker rather than once per target. Under `doit -n N` several threads
ask at once; each gets its own worker, so at most N workers run per backend.

With a ServerConfig, jobs go to the export server (rules.execution.server),
which has paid that import before the build started. Whatever goes wrong with
it, the job runs on a per-build worker instead, and the server is not used
again by this build (rules.execution.server.route).

A big build hands over to per-build workers. Each export in a child forked
from the server pays the runtime's first use again (0.36 s here, against
0.20 s in a worker that has exported before): a cold build of 100 small
models took 57 s on the server alone and 27 s on per-build workers. So once
the server has taken WORKERS_AFTER jobs of a backend in this build, workers
are started in the background, and jobs go to them once they are ready.
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

from rules.execution.protocol import PING, JobRequest, JobResult, decode, encode
from rules.execution.server import client as server_client
from rules.execution.server.route import ServerConfig, ServerRoute

__all__ = ["ServerConfig", "Worker", "WorkerPool", "worker_env"]

# A worker's import (3-5 s) pays for itself after about 25 more jobs; below
# this many, a build is likely a rebuild that the server does best alone.
WORKERS_AFTER = 16


# The remote cache's settings and credentials: a job never needs them, and a
# warm server would keep them readable in /proc/<pid>/environ for its whole
# idle timeout.
SECRET_PREFIX = "RULES_KERAS_REMOTE_"


def worker_env(backend: str, hidden: frozenset[str] = frozenset()) -> dict[str, str]:
    """The environment a job runs in, on a per-build worker or in the server's child:
    ours, without the remote cache's settings and the `hidden` variables (its headers)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(SECRET_PREFIX) and k not in hidden}
    env["KERAS_BACKEND"] = backend
    # TensorFlow's C++ INFO/WARNING lines drown the build log; users can lower it.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class Worker:
    """One worker subprocess speaking JSON lines over a private pipe.

    With `log`, what the worker prints outside a job (TensorFlow's import
    notices) is appended there; each job's own output goes to the job's log.
    """

    def __init__(self, root: Path, backend: str, env: dict[str, str],
                 log: Path | None = None) -> None:
        self.backend = backend
        read_fd, write_fd = os.pipe()
        output = open(log, "ab") if log is not None else None  # noqa: SIM115
        # The build's stderr, for what must reach the console from inside a
        # job (rules.core.faults' pause announcements).
        console = os.dup(2)
        # Results travel on a dedicated pipe so that user code printing to
        # stdout can never corrupt the protocol.
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rules.execution.worker", str(root), str(write_fd),
                 str(console)],
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                pass_fds=(write_fd, console),
                env=env,
                cwd=root,
            )
        finally:
            if output is not None:
                output.close()
            os.close(console)
        os.close(write_fd)
        self._results = os.fdopen(read_fd, "rb")

    def run(self, request: JobRequest) -> JobResult:
        return self._exchange(request.to_wire(), request.log)

    def ping(self) -> JobResult:
        """Answered once the worker has imported its backend."""
        return self._exchange(PING)

    def _exchange(self, message: dict[str, object], log: str = "") -> JobResult:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(encode(message))
            self.process.stdin.flush()
            line = self._results.readline()
        except (BrokenPipeError, OSError):
            line = b""
        if not line:
            code = self.process.wait()
            if code == 0:
                return JobResult.exited()
            where = f"its log {log}" if log else "its output above"
            return JobResult.failure(
                "WorkerCrashed",
                f"the {self.backend} worker exited with code {code} while building; "
                f"see {where} (out of memory or a crash in native code?)",
            )
        return JobResult.from_wire(decode(line))

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
    """Sends jobs to the export server, or hands out per-build workers started on demand."""

    def __init__(
        self,
        root: Path,
        on_start: Callable[[str], None] | None = None,
        server: ServerConfig | None = None,
        on_notice: Callable[[str], None] | None = None,
        hidden_env: frozenset[str] = frozenset(),
        log_dir: Path | None = None,
    ) -> None:
        self._root = root
        self._log_dir = log_dir
        self._logged: set[str] = set()
        self._hidden_env = hidden_env
        self._idle: dict[str, list[Worker]] = {}
        self._all: list[Worker] = []
        self._lock = threading.Lock()
        self._on_start = on_start
        self._route = (
            ServerRoute(root, server, on_notice or (lambda message: None))
            if server is not None and server_client.supported()
            else None
        )
        # Per backend: jobs the server took, how many at once at most, and
        # workers being started in the background for a big build.
        self._served: dict[str, int] = {}
        self._in_server: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._warming: dict[str, int] = {}
        self._closed = False
        atexit.register(self.close)

    def run(self, request: JobRequest) -> JobResult:
        backend = request.job.backend
        worker = None
        if self._route is not None:
            worker = self._ready_worker(backend)
            if worker is None:
                result = self._run_on_server(request)
                if result is not None:
                    return result
        if worker is None:
            worker = self._checkout(backend)
        result = worker.run(request)
        with self._lock:
            if worker.alive():
                self._idle[backend].append(worker)
            else:
                self._all.remove(worker)
        return result

    def _run_on_server(self, request: JobRequest) -> JobResult | None:
        assert self._route is not None
        backend = request.job.backend
        with self._lock:
            self._served[backend] = served = self._served.get(backend, 0) + 1
            self._in_server[backend] = busy = self._in_server.get(backend, 0) + 1
            self._peak[backend] = max(self._peak.get(backend, 0), busy)
            workers = sum(w.backend == backend for w in self._all)
            warm_one = served > WORKERS_AFTER and (
                workers + self._warming.get(backend, 0) < self._peak[backend]
            )
            if warm_one:
                self._warming[backend] = self._warming.get(backend, 0) + 1
        if warm_one:
            threading.Thread(target=self._warm_worker, args=(backend,), daemon=True).start()
        try:
            return self._route.run(request, worker_env(backend, self._hidden_env))
        finally:
            with self._lock:
                self._in_server[backend] -= 1

    def _warm_worker(self, backend: str) -> None:
        """Start a worker and make it import its backend, then offer it to run()."""
        worker: Worker | None = None
        try:
            if self._on_start is not None:
                self._on_start(backend)
            worker = Worker(self._root, backend, worker_env(backend, self._hidden_env),
                            self._worker_log(backend))
            with self._lock:
                if self._closed:
                    raise RuntimeError("the build is over")
                self._all.append(worker)
            worker.ping()
        except Exception:
            if worker is not None and worker not in self._all:
                worker.close()
            worker = None
        with self._lock:
            self._warming[backend] -= 1
            if worker is not None and worker in self._all:
                if worker.alive() and not self._closed:
                    self._idle.setdefault(backend, []).append(worker)
                else:
                    self._all.remove(worker)

    def _worker_log(self, backend: str) -> Path | None:
        """`<log_dir>/<backend>.log`, started afresh by this build's first worker."""
        if self._log_dir is None:
            return None
        path = self._log_dir / f"{backend}.log"
        with self._lock:
            first = backend not in self._logged
            self._logged.add(backend)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if first:
                path.write_bytes(b"")
        except OSError:
            return None  # the worker's notices then reach the console, as before
        return path

    def _ready_worker(self, backend: str) -> Worker | None:
        with self._lock:
            idle = self._idle.setdefault(backend, [])
            while idle:
                worker = idle.pop()
                if worker.alive():
                    return worker
                self._all.remove(worker)
        return None

    def _checkout(self, backend: str) -> Worker:
        worker = self._ready_worker(backend)
        if worker is not None:
            return worker
        if self._on_start is not None:
            self._on_start(backend)
        worker = Worker(self._root, backend, worker_env(backend, self._hidden_env),
                            self._worker_log(backend))
        with self._lock:
            self._all.append(worker)
        return worker

    @property
    def started(self) -> int:
        with self._lock:
            return len(self._all)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._all, self._idle = self._all, [], {}
        for worker in workers:
            worker.close()
        server_client.reap()
