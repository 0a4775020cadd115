"""Where jobs run: the workspace's warm export server, else this build's own workers.

KERAS_BACKEND is fixed when keras is first imported, so each worker serves
one backend. A worker serves many jobs, so a build pays the TensorFlow import
once per worker rather than once per target. Under `doit -n N` several threads
ask at once; each gets its own worker, so at most N workers run per backend.

With a ServerConfig, jobs go to the export server (rules.execution.server),
which has paid that import before the build started. Whatever goes wrong with
it, the job runs on a per-build worker instead, and the server is not used
again by this build.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rules.execution import server_client
from rules.execution.protocol import Job, JobResult
from rules.execution.server_protocol import ServerPaths, fingerprint, server_paths


@dataclass(frozen=True)
class ServerConfig:
    """How to reach the workspace's export servers; None in the pool means never."""

    state: Path
    idle_timeout: float
    # The action key's toolchain section, computed only when a job needs a server.
    toolchain: Callable[[], Mapping[str, object]]


def worker_env(backend: str) -> dict[str, str]:
    """The environment a job runs in, on a per-build worker or in the server's child."""
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    # TensorFlow's C++ INFO/WARNING lines drown the build log; users can lower it.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class Worker:
    """One worker subprocess speaking JSON lines over a private pipe."""

    def __init__(self, root: Path, backend: str) -> None:
        self.backend = backend
        read_fd, write_fd = os.pipe()
        env = worker_env(backend)
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
    """Sends jobs to the export server, or hands out per-build workers started on demand."""

    def __init__(
        self,
        root: Path,
        on_start: Callable[[str], None] | None = None,
        server: ServerConfig | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self._root = root
        self._idle: dict[str, list[Worker]] = {}
        self._all: list[Worker] = []
        self._lock = threading.Lock()
        self._on_start = on_start
        self._server = server if server is not None and server_client.supported() else None
        self._notice = on_notice or (lambda message: None)
        # Per backend: the server's files and our fingerprint once it is known
        # to run, or None once this build stopped using it.
        self._servers: dict[str, tuple[ServerPaths, str] | None] = {}
        self._server_locks: dict[str, threading.Lock] = {}
        atexit.register(self.close)

    def run(self, job: Job) -> JobResult:
        if self._server is not None:
            result = self._run_on_server(job)
            if result is not None:
                return result
        worker = self._checkout(job.backend)
        result = worker.run(job)
        with self._lock:
            if worker.alive():
                self._idle[job.backend].append(worker)
            else:
                self._all.remove(worker)
        return result

    def _run_on_server(self, job: Job) -> JobResult | None:
        """The job's result from the server, or None to run it on a per-build worker."""
        backend = job.backend
        for attempt in range(2):
            server = self._server_for(backend)
            if server is None:
                return None
            paths, fp = server
            assert self._server is not None
            try:
                return server_client.run(paths, self._root, fp, self._server.idle_timeout, job,
                                         worker_env(backend))
            except (server_client.ServerRefused, server_client.ServerUnavailable) as err:
                # Nothing ran. Another build (a new toolchain) replaced it, it
                # retired, or it timed out idle during a long build: start
                # one of ours once, then stop trying.
                self._give_up(backend, f"it did not take a job: {err}" if attempt else "")
            except server_client.ServerLost as err:
                # Its export process may still be writing into job.out: make
                # sure it is gone before a worker starts over in the same place.
                server_client.kill_export(err.child)
                _discard(Path(job.out))
                self._give_up(backend, f"{err} while building {job.label}, which is retried")
                return None
        return None

    def _server_for(self, backend: str) -> tuple[ServerPaths, str] | None:
        with self._lock:
            lock = self._server_locks.setdefault(backend, threading.Lock())
        with lock:
            if backend in self._servers:
                return self._servers[backend]
            assert self._server is not None
            found: tuple[ServerPaths, str] | None = None
            try:
                paths = server_paths(self._server.state, backend)
                fp = fingerprint(backend, self._server.toolchain())
                how, pid = server_client.ensure_running(
                    paths, self._root, fp, self._server.idle_timeout, worker_env(backend)
                )
                found = (paths, fp)
                self._notice(_started_message(backend, how, pid, self._server.idle_timeout))
            except Exception as err:  # an optimisation: nothing about it may fail a build
                self._notice(f"warning: the {backend} export server is unavailable ({err}); "
                             "building with per-build workers")
            self._servers[backend] = found
            return found

    def _give_up(self, backend: str, why: str) -> None:
        """Stop using the server in this build; with no `why`, allow one fresh start."""
        with self._lock:
            lock = self._server_locks.setdefault(backend, threading.Lock())
        with lock:
            if not why:
                self._servers.pop(backend, None)
                return
            if self._servers.get(backend) is not None:
                self._notice(f"warning: the {backend} export server failed ({why}); "
                             "building with per-build workers")
            self._servers[backend] = None

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
        server_client.reap()


def _started_message(backend: str, how: str, pid: int, idle_timeout: float) -> str:
    if how == "warm":
        return f"using the warm {backend} export server (pid {pid})"
    what = "restarted" if how == "restarted" else "started"
    reason = " because the toolchain changed" if how == "restarted" else ""
    return (f"{what} the {backend} export server (pid {pid}){reason}; it stays warm "
            f"for {idle_timeout:g}s between builds (`doit server_stop` stops it)")


def _discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()
