"""Client of the export server: start it, clean up after a dead one, send jobs, status and stop.

Every failure here is an exception the pool turns into a fallback to
per-build workers: the server makes builds faster, never possible.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

import rules
from rules.core.fsio import pid_alive
from rules.execution.protocol import JobRequest, JobResult
from rules.execution.server.protocol import (
    LineReader,
    ServerPaths,
    read_info,
    send,
    socket_address,
)

# A server binds its socket before importing the backend, within a second of
# starting; the generous bound covers a machine busy with other builds.
START_TIMEOUT = 60.0
# A status reply waits for the server to finish its imports when it has
# just been started by another build.
STATUS_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LOG_LIMIT = 1 << 20


class ServerUnavailable(Exception):
    """The server could not be started or reached; the job did not run."""


class ServerRefused(Exception):
    """The server would not run the job (its toolchain differs, or it is retiring)."""


class ServerLost(Exception):
    """The connection ended before a result: the server died or its export process crashed.

    `child` is the pid of the export process, when the server had reported it.
    """

    def __init__(self, message: str, child: int | None) -> None:
        super().__init__(message)
        self.child = child


@dataclass(frozen=True)
class ServerState:
    """What `status` found for one backend."""

    backend: str
    running: bool
    pid: int | None = None
    details: dict[str, Any] | None = None
    note: str = ""


def supported() -> bool:
    return hasattr(socket, "AF_UNIX") and hasattr(os, "fork") and hasattr(socket, "send_fds")


def _connect(paths: ServerPaths, timeout: float | None) -> socket.socket:
    """A connected socket (use it in a `with`); raises OSError when nothing listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        with socket_address(paths.socket) as address:
            sock.connect(address)
        sock.settimeout(timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def request_status(paths: ServerPaths, timeout: float = STATUS_TIMEOUT) -> dict[str, Any] | None:
    """The server's status reply, or None if nothing answers on its socket."""
    try:
        with _connect(paths, timeout) as sock:
            send(sock, {"op": "status"})
            reply = LineReader(sock).read()
    except (OSError, ValueError):
        return None
    return reply if reply is not None and reply.get("type") == "status" else None


def run(paths: ServerPaths, root: Path, fingerprint: str, idle_timeout: float,
        job: JobRequest, env: dict[str, str]) -> JobResult:
    """Run one job in a fresh child of the server; its output goes to our stdout and stderr."""
    try:
        sock = _connect(paths, None)
    except OSError as err:
        raise ServerUnavailable(f"cannot connect to {paths.socket}: {err}") from err
    child: int | None = None
    with sock:
        request = {**job.to_wire(), "fingerprint": fingerprint, "idle_timeout": idle_timeout,
                   "root": str(root), "env": env}
        reader = LineReader(sock)
        try:
            send(sock, request, fds=(1, 2))
        except OSError as err:
            # A server that refuses (another toolchain) answers on reading the
            # message's head and closes, which can break our write of the rest
            # (a large env): its refusal is still waiting in our receive buffer.
            try:
                early = reader.read()
            except (OSError, ValueError):
                early = None
            if early is not None and early.get("type") == "refused":
                raise ServerRefused(str(early.get("reason"))) from err
            raise ServerUnavailable(f"cannot send the job: {err}") from err
        while True:
            try:
                reply = reader.read()
            except (OSError, ValueError):
                reply = None
            kind = reply.get("type") if reply else None
            if reply is None:
                raise ServerLost("it closed the connection", child)
            if kind == "started":
                child = int(reply["pid"])
            elif kind == "result":
                return JobResult.from_wire(reply["result"])
            elif kind == "crashed":
                raise ServerLost(f"its export process {reply.get('how')}", child)
            elif kind == "refused":
                raise ServerRefused(str(reply.get("reason")))
            else:
                raise ServerLost(f"unexpected reply {reply!r}", child)


def ensure_running(paths: ServerPaths, fingerprint: str, idle_timeout: float,
                   env: dict[str, str]) -> tuple[str, int]:
    """Make sure a server with our fingerprint listens; returns (how, pid).

    `how` is "warm" (it was running), "started", or "restarted" (one with
    another toolchain was retired first). A file lock makes concurrent builds,
    of any workspaces, start one server between them.
    """
    try:
        with FileLock(str(paths.lock), timeout=START_TIMEOUT):
            status = request_status(paths)
            how = "started"
            if status is not None:
                pid = _warm_pid(status, fingerprint)
                if pid is not None:
                    return "warm", pid
                _retire(paths)
                how = "restarted"
            else:
                clean_stale(paths)
            return how, _spawn(paths, idle_timeout, env)
    except FileLockTimeout as err:
        raise ServerUnavailable(f"another build holds {paths.lock}") from err
    except OSError as err:
        raise ServerUnavailable(f"{type(err).__name__}: {err}") from err


def warm_pid(paths: ServerPaths, fingerprint: str) -> int | None:
    """The pid of the server answering on `paths` with our fingerprint; None when none does.
    A read, without the start lock: ensure_running decides under it."""
    status = request_status(paths)
    return None if status is None else _warm_pid(status, fingerprint)


def _warm_pid(status: dict[str, Any], fingerprint: str) -> int | None:
    return int(status["pid"]) if status.get("fingerprint") == fingerprint else None


def _spawn(paths: ServerPaths, idle_timeout: float, env: dict[str, str]) -> int:
    """Start a detached server and wait until it listens.

    Its working folder is the one holding the rules package: `python -m`
    puts it first on sys.path, so the server imports the rules that this
    client runs (the environment key names that folder), and never the
    starting workspace, whose code it must not see (server.main drops it).
    """
    if paths.log.exists() and paths.log.stat().st_size > LOG_LIMIT:
        os.replace(paths.log, paths.log.with_name(paths.log.name + ".1"))
    with open(paths.log, "ab") as log:
        # Its own session and no inherited pipes: it must outlive this build
        # and never hold a caller's stdout open (a CI step waits for EOF).
        proc = subprocess.Popen(
            [sys.executable, "-m", "rules.execution.server", str(paths.folder), paths.name,
             paths.backend, repr(idle_timeout)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=Path(rules.__file__).resolve().parent.parent, env=env,
            start_new_session=True, close_fds=True,
        )
    _spawned.append(proc)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerUnavailable(
                f"the server exited with code {proc.returncode} while starting; "
                f"see {paths.log}: {_log_tail(paths)}"
            )
        info = read_info(paths)
        if info is not None and info.get("pid") == proc.pid and paths.socket.exists():
            return proc.pid
        time.sleep(0.02)
    _kill(proc.pid)
    raise ServerUnavailable(f"the server did not listen within {START_TIMEOUT:g}s; "
                            f"see {paths.log}")


# Popen objects of servers this process started, kept so that they are not
# reported as leaked and are reaped (not left as zombies) by reap().
_spawned: list[subprocess.Popen[bytes]] = []


def reap() -> None:
    for proc in list(_spawned):
        if proc.poll() is not None:
            _spawned.remove(proc)


def clean_stale(paths: ServerPaths) -> str:
    """Remove the socket and info file of a server that is gone (say, after kill -9).

    A live process that owns them but does not answer is wedged; it is killed
    first. Returns a note for the user, or "" if there was nothing to clean.
    """
    info = read_info(paths)
    pid = info.get("pid") if info else None
    note = ""
    if isinstance(pid, int) and pid_alive(pid) and _is_server(pid):
        _kill(pid)
        note = f"killed pid {pid}, which held the socket but did not answer"
    elif isinstance(pid, int):
        note = f"removed the files left by pid {pid}"
    elif paths.socket.exists():
        note = "removed a socket left without an owner"
    paths.socket.unlink(missing_ok=True)
    paths.info.unlink(missing_ok=True)
    return note


def stop(paths: ServerPaths) -> int | None:
    """Stop the server if one runs; returns its pid. Running jobs end; their builds fall back."""
    if not paths.folder.is_dir():
        return None
    try:
        with FileLock(str(paths.lock), timeout=START_TIMEOUT):
            return _stop(paths)
    except (FileLockTimeout, OSError):
        # A build is stuck starting one (or the lock is out of reach): stop
        # what runs, without cleaning up after it.
        return _stop(paths, clean=False)


def _retire(paths: ServerPaths) -> None:
    """Replace a stale server gently: it frees its name at once, finishes its running jobs
    (another workspace's, perhaps) and exits. One that does not answer is stopped."""
    try:
        with _connect(paths, STOP_TIMEOUT) as sock:
            send(sock, {"op": "retire"})
            reply = LineReader(sock).read()
    except (OSError, ValueError):
        reply = None
    if reply is None or reply.get("type") != "retiring":
        _stop(paths)


def _stop(paths: ServerPaths, *, clean: bool = True) -> int | None:
    info = read_info(paths)
    pid: int | None = None
    try:
        with _connect(paths, STOP_TIMEOUT) as sock:
            send(sock, {"op": "stop"})
            reply = LineReader(sock).read()
            if reply is not None and isinstance(reply.get("pid"), int):
                pid = reply["pid"]
    except (OSError, ValueError):
        pass
    if pid is None and info is not None and isinstance(info.get("pid"), int):
        pid = info["pid"]
        if not (pid_alive(pid) and _is_server(pid)):
            if clean:
                clean_stale(paths)
            return None
    if pid is None:
        return None
    if not _wait_gone(pid, STOP_TIMEOUT):
        _kill(pid)
    if clean:
        clean_stale(paths)
    return pid


def status(paths: ServerPaths) -> ServerState:
    """Ask the server; with no answer, clean up after a dead one unless a build is starting one."""
    reply = request_status(paths, timeout=10.0)
    if reply is not None:
        return ServerState(paths.backend, True, int(reply["pid"]), reply)
    info = read_info(paths)
    pid = info.get("pid") if info else None
    if isinstance(pid, int) and pid_alive(pid) and _is_server(pid):
        return ServerState(paths.backend, True, pid, None, "starting or busy: no reply yet")
    try:
        with FileLock(str(paths.lock), timeout=0):
            note = clean_stale(paths)
    except FileLockTimeout:
        return ServerState(paths.backend, False, None, None, "a build is starting it")
    return ServerState(paths.backend, False, None, None, note)


def kill_export(pid: int | None) -> None:
    """Make sure an export process of a lost server is gone before its job is retried."""
    if pid is not None and pid_alive(pid):
        _kill(pid)


def _is_server(pid: int) -> bool:
    """Whether pid runs rules.execution.server; guards against a reused pid."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"rules.execution.server" in handle.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")
    except OSError:
        return False


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, STOP_TIMEOUT)
    reap()


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        reap()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _log_tail(paths: ServerPaths, lines: int = 5) -> str:
    try:
        text = paths.log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])
