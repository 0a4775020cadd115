"""The pool's way to the export server: reach it once per build, retry once, else fall back."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rules.core.fsio import discard
from rules.execution.protocol import JobRequest, JobResult
from rules.execution.server import client as server_client
from rules.execution.server.protocol import ServerPaths, fingerprint
from rules.execution.server.runtime import shared_paths


@dataclass(frozen=True)
class ServerConfig:
    """How to use this environment's export servers; None in the pool means never.

    They are shared by every workspace (rules.execution.server.runtime), so
    nothing here names this one: its root travels with each job.
    """

    # The workspace's setting; it becomes the server's until another job's.
    idle_timeout: float
    # The action key's toolchain section, computed only when a job needs a server.
    toolchain: Callable[[], Mapping[str, object]]
    # How many of this build's targets of a backend are cold: never built here, or built
    # with another toolchain (storage.manifest.cold).
    cold: Callable[[str], int] = lambda backend: 0


# A cold build of this many targets, with no server of ours warm, runs on
# per-build workers and starts no server: forked children pay the runtime's
# first use on every export and the handover workers' imports then compete
# with them (37 s against 23 s for 100 models at -n 2, BENCHMARKS.md section 8).
# The pool hands a warm server's big builds over at the same count.
COLD_BUILD = 16


class ServerRoute:
    """One build's use of the servers: which backends' are usable, and what went wrong."""

    def __init__(self, root: Path, config: ServerConfig, notice: Callable[[str], None]) -> None:
        self._root = root
        self._config = config
        self._notice = notice
        self._lock = threading.Lock()
        # Per backend: the server's files and our fingerprint once it is known
        # to run, or None once this build stopped using it.
        self._servers: dict[str, tuple[ServerPaths, str] | None] = {}
        self._backend_locks: dict[str, threading.Lock] = {}

    def run(self, request: JobRequest, env: dict[str, str]) -> JobResult | None:
        """The job's result from the server, or None to run it on a per-build worker."""
        backend = request.job.backend
        for attempt in range(2):
            server = self._server_for(backend, env)
            if server is None:
                return None
            paths, fp = server
            try:
                return server_client.run(paths, self._root, fp, self._config.idle_timeout,
                                         request, env)
            except (server_client.ServerRefused, server_client.ServerUnavailable) as err:
                # Nothing ran. Another build (a new toolchain) replaced it, it
                # retired, or it timed out idle during a long build: start
                # one of ours once, then stop trying.
                self._give_up(backend, f"it did not take a job: {err}" if attempt else "")
            except server_client.ServerLost as err:
                # Its export process may still be writing into job.out: make
                # sure it is gone before a worker starts over in the same place.
                server_client.kill_export(err.child)
                discard(Path(request.out))
                self._give_up(
                    backend, f"{err} while building {request.job.label}, which is retried"
                )
                return None
        return None

    def _backend_lock(self, backend: str) -> threading.Lock:
        with self._lock:
            return self._backend_locks.setdefault(backend, threading.Lock())

    def _server_for(self, backend: str, env: dict[str, str]) -> tuple[ServerPaths, str] | None:
        with self._backend_lock(backend):
            if backend in self._servers:
                return self._servers[backend]
            found: tuple[ServerPaths, str] | None = None
            try:
                paths = shared_paths(backend)
                fp = fingerprint(backend, self._config.toolchain())
                # A warm server is used as found: asking again under the start lock
                # (ensure_running) is only needed to start or replace one.
                warm = server_client.warm_pid(paths, fp)
                if warm is not None:
                    how, pid = "warm", warm
                elif (cold := self._config.cold(backend)) >= COLD_BUILD:
                    self._notice(f"{cold} {backend} targets were never built with this toolchain "
                                 "and no export server is warm: building on per-build workers, "
                                 "which a cold build this size finishes sooner")
                    self._servers[backend] = None
                    return None
                else:
                    how, pid = server_client.ensure_running(paths, fp, self._config.idle_timeout,
                                                            env)
                found = (paths, fp)
                self._notice(_started_message(backend, how, pid, self._config.idle_timeout))
            except Exception as err:  # an optimisation: nothing about it may fail a build
                self._notice(f"warning: the {backend} export server is unavailable ({err}); "
                             "building with per-build workers")
            self._servers[backend] = found
            return found

    def _give_up(self, backend: str, why: str) -> None:
        """Stop using the server in this build; with no `why`, allow one fresh start."""
        with self._backend_lock(backend):
            if not why:
                self._servers.pop(backend, None)
                return
            if self._servers.get(backend) is not None:
                self._notice(f"warning: the {backend} export server failed ({why}); "
                             "building with per-build workers")
            self._servers[backend] = None


def _started_message(backend: str, how: str, pid: int, idle_timeout: float) -> str:
    if how == "warm":
        return f"using the warm {backend} export server (pid {pid})"
    what = "restarted" if how == "restarted" else "started"
    reason = " because the toolchain changed" if how == "restarted" else ""
    return (f"{what} the {backend} export server (pid {pid}){reason}; it stays warm "
            f"for {idle_timeout:g}s between builds (`doit server_stop` stops it)")
