"""The export server's loop: accept requests, fork a child per job, relay its result.

While no job runs, the loop keeps one spare child that has run a warm-up export of a
built-in model (server.child): the next job goes to it and skips the runtime's first-use
costs, 0.15 s of a 0.4 s export here. Spares are only made after a second without jobs,
so a busy build does not pay for them.

Nothing here belongs to one workspace: each request brings its root, environment and
idle timeout, so the server is shared by every workspace of its environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rules.execution.protocol import JobResult, encode
from rules.execution.server.child import describe, run_child, run_spare
from rules.execution.server.process import inode, log, thread_count
from rules.execution.server.protocol import MAX_MESSAGE, ServerPaths, send
from rules.execution.server.workspaces import Workspaces

TICK = 0.5
# A busy build's loop idles a moment between jobs; a spare's warm-up then competes.
SPARE_AFTER_IDLE = 1.0
# A spare told to exit may still be in its warm-up; it gets this long.
SPARE_EXIT_TIMEOUT = 30.0


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    fds: list[int] = field(default_factory=list)
    child: _Child | None = None


@dataclass(eq=False)
class _Child:
    pid: int
    # Our end of a socketpair: a spare's job goes out on it, every result comes back.
    channel: socket.socket
    conn: _Conn | None
    label: str
    started: float
    root: str = ""
    ready: bool = True
    output: bytearray = field(default_factory=bytearray)


class Server:
    """The accept/fork/relay loop; single-threaded, so forking from it is safe."""

    def __init__(
        self, paths: ServerPaths, listener: socket.socket, fp: str, idle_timeout: float
    ) -> None:
        self.paths = paths
        self.backend = paths.backend
        self.listener = listener
        self.fingerprint = fp
        self.idle_timeout = idle_timeout
        self.pid = os.getpid()
        self.started = time.time()
        self.last_active = time.monotonic()
        self.jobs = 0
        self.workspaces = Workspaces()
        self.conns: set[_Conn] = set()
        self.children: dict[int, _Child] = {}
        self.spare: _Child | None = None
        self.spares = True
        self.accepting = True
        self.exit_reason = ""
        self.signalled = False
        self.stopped = 0.0
        self.threads = thread_count()
        self.inode = inode(paths.socket)
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, None)
        # The handler only sets a flag: it may run in the middle of any
        # selector or bookkeeping step, so the loop acts on it at its next tick.
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "signalled", True))

    # -- loop -----------------------------------------------------------------

    def serve(self) -> None:
        log(f"serving {self.backend} jobs on {self.paths.socket} (idle timeout "
            f"{self.idle_timeout:g}s, fingerprint {self.fingerprint[:12]})")
        while self.accepting or self.children or self.spare:
            for key, _ in self.selector.select(TICK):
                if key.data is None:
                    self._accept()
                elif isinstance(key.data, _Conn):
                    self._read_conn(key.data)
                else:
                    self._read_child(key.data)
            self._tick()
        for conn in list(self.conns):
            self._close(conn)
        self._remove_files()
        log(f"exiting: {self.exit_reason}")

    def _tick(self) -> None:
        if self.signalled:
            self.stop("SIGTERM", kill=True)
        if not self.accepting:
            if self.spare is not None and time.monotonic() - self.stopped > SPARE_EXIT_TIMEOUT:
                with contextlib.suppress(OSError):
                    os.kill(self.spare.pid, signal.SIGKILL)
            return
        if inode(self.paths.socket) != self.inode:
            self.stop("the socket was removed or replaced", kill=False)
        elif (
            not self.children
            and not self.conns
            and time.monotonic() - self.last_active > self.idle_timeout
        ):
            self.stop(f"idle for {self.idle_timeout:g}s", kill=False)
        elif (
            self.spares
            and self.spare is None
            and not self.children
            and time.monotonic() - self.last_active > SPARE_AFTER_IDLE
            and thread_count() <= self.threads
        ):
            self.spare = self._fork(None, None)

    def stop(self, reason: str, *, kill: bool) -> None:
        """Stop accepting; with `kill`, end running jobs too (their clients fall back)."""
        if self.accepting:
            self.accepting = False
            self.exit_reason = reason
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self.listener)
            self.listener.close()
            # Free the name at once, so that a client can start a successor
            # while this process still finishes its running jobs.
            self._remove_files()
            self.stopped = time.monotonic()
            if self.spare is not None:
                # End of input tells it to exit, running its own exit handlers
                # (autograph's files in /tmp); SIGKILL would leave those.
                with contextlib.suppress(OSError):
                    self.spare.channel.shutdown(socket.SHUT_WR)
        if kill:
            for child in self.children.values():
                with contextlib.suppress(OSError):
                    os.kill(child.pid, signal.SIGKILL)
                # No reply: the client sees the connection close and retries
                # the job on a per-build worker, instead of reporting a crash.
                if child.conn is not None:
                    self._close(child.conn)

    # -- connections ----------------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        sock.settimeout(5.0)
        conn = _Conn(sock)
        self.conns.add(conn)
        self.selector.register(sock, selectors.EVENT_READ, conn)

    def _read_conn(self, conn: _Conn) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(conn.sock, 1 << 16, 2)
        except OSError:
            data, fds = b"", []
        conn.fds.extend(fds)
        if not data:
            if conn.child is not None:
                # The build went away (killed, or interrupted): its export
                # must not go on writing into a staging folder nobody owns.
                log(f"client of {conn.child.label} disconnected; killing pid {conn.child.pid}")
                with contextlib.suppress(OSError):
                    os.kill(conn.child.pid, signal.SIGKILL)
            self._close(conn)
            return
        conn.buffer += data
        if conn.child is not None or b"\n" not in conn.buffer:
            if len(conn.buffer) > MAX_MESSAGE:
                self._close(conn)
            return
        line = bytes(conn.buffer.partition(b"\n")[0])
        conn.buffer.clear()
        try:
            request = json.loads(line)
            op = request["op"]
        except (ValueError, KeyError, TypeError):
            self._reply(conn, {"type": "error", "message": "malformed request"})
            self._close(conn)
            return
        if op == "status":
            self._reply(conn, {"type": "status", **self.status()})
            self._close(conn)
        elif op in ("stop", "retire"):
            # Files first: once the client reads the reply, a successor may
            # bind. Retiring lets the running jobs (another workspace's) end.
            self.stop(f"asked to {op}", kill=op == "stop")
            self._reply(conn, {"type": "stopping" if op == "stop" else "retiring", "pid": self.pid})
            self._close(conn)
        elif op == "run":
            self._run(conn, request)
        else:
            self._reply(conn, {"type": "error", "message": f"unknown op {op!r}"})
            self._close(conn)

    def _reply(self, conn: _Conn, message: dict[str, Any]) -> None:
        try:
            conn.sock.sendall(encode(message))
        except OSError:
            pass

    def _close(self, conn: _Conn) -> None:
        for fd in conn.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        conn.fds.clear()
        if conn in self.conns:
            self.conns.discard(conn)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn.sock)
            conn.sock.close()
        if conn.child is not None:
            conn.child.conn = None
            conn.child = None

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "pid": self.pid,
            "backend": self.backend,
            "fingerprint": self.fingerprint,
            "started": self.started,
            "jobs": self.jobs,
            "workspaces": self.workspaces.to_json(),
            "workspace_modules": self.workspaces.modules_loaded(),
            "running": sorted(c.label for c in self.children.values()),
            "idle_timeout": self.idle_timeout,
            "idle_for": 0.0 if self.children else round(now - self.last_active, 1),
            "spare": None if self.spare is None else "ready" if self.spare.ready else "warming",
            "log": str(self.paths.log),
        }

    # -- jobs -----------------------------------------------------------------

    def _run(self, conn: _Conn, request: dict[str, Any]) -> None:
        refusal = ""
        if not self.accepting:
            refusal = "retiring"
        elif request.get("fingerprint") != self.fingerprint:
            refusal = "toolchain"
        elif thread_count() > self.threads:
            # Something started threads in this process; a child forked now
            # could inherit a held lock. Hand over to a fresh server. (Fewer
            # is fine: OpenBLAS ends its pool at the first fork.)
            refusal = "unsafe"
        elif len(conn.fds) != 2 or not all(k in request for k in ("job", "env", "root")):
            refusal = "protocol"
        if refusal:
            self._reply(conn, {"type": "refused", "reason": refusal,
                               "fingerprint": self.fingerprint, "pid": self.pid})
            self._close(conn)
            if refusal in ("toolchain", "unsafe"):
                log(f"refused a job ({refusal}); retiring so a fresh server can take over")
                self.stop(f"refused a job: {refusal}", kill=False)
            return
        # Each workspace may set its own; the latest job's holds until the next.
        with contextlib.suppress(TypeError, ValueError):
            self.idle_timeout = float(request.get("idle_timeout", self.idle_timeout))
        spare, self.spare = self.spare, None
        child: _Child | None = None
        if spare is not None and spare.ready:
            try:
                send(spare.channel, request, fds=conn.fds)
                child = spare
            except OSError:
                with contextlib.suppress(OSError):
                    os.kill(spare.pid, signal.SIGKILL)
                self.spare = spare
        elif spare is not None:
            # Still warming up: a fresh fork is quicker than waiting for it.
            self.spare = spare
        if child is None:
            child = self._fork(conn, request)
        for fd in conn.fds:
            os.close(fd)
        conn.fds.clear()
        child.conn, child.label = conn, str(request["job"].get("label"))
        child.started, child.root = time.monotonic(), str(request["root"])
        self.workspaces.add(child.root)
        conn.child = child
        self.children[child.pid] = child
        self.jobs += 1
        self.last_active = time.monotonic()
        self._reply(conn, {"type": "started", "pid": child.pid})

    def _fork(self, conn: _Conn | None, request: dict[str, Any] | None) -> _Child:
        """A child for this request, or (with none) a spare that warms up and waits for one."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            ours.close()
            self._close_inherited()
            if conn is None or request is None:
                run_spare(theirs, self.pid, self.backend, self.paths.folder)
            run_child(request, conn.fds, theirs.fileno(), self.pid, self.backend)
        theirs.close()
        ours.settimeout(5.0)
        child = _Child(pid, ours, None, "(spare)", time.monotonic(), ready=request is not None)
        self.selector.register(ours, selectors.EVENT_READ, child)
        return child

    def _close_inherited(self) -> None:
        """In a new child: close the server's descriptors, so that only the server holds them."""
        with contextlib.suppress(OSError):
            self.selector.close()
            self.listener.close()
            for other in self.conns:
                other.sock.close()
            for sibling in (*self.children.values(), *filter(None, [self.spare])):
                sibling.channel.close()

    def _read_child(self, child: _Child) -> None:
        try:
            data = child.channel.recv(1 << 16)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            data = b""
        if data:
            child.output += data
            if not child.ready and b"\n" in child.output:
                child.output = bytearray(bytes(child.output).partition(b"\n")[2])
                child.ready = True
                log(f"spare pid {child.pid} warmed up in {time.monotonic() - child.started:.2f}s")
            return
        self.selector.unregister(child.channel)
        child.channel.close()
        # The child held the only other end, so EOF means it is exiting.
        try:
            _, status = os.waitpid(child.pid, 0)
        except ChildProcessError:
            status = 0
        if child is self.spare:
            self.spare = None
            if self.accepting:
                # A warm-up that fails would fail again: go on with plain forks.
                self.spares = False
                log(f"spare pid {child.pid} {describe(status)}; not keeping spares any more")
            return
        del self.children[child.pid]
        self.last_active = time.monotonic()
        seconds = time.monotonic() - child.started
        line = bytes(child.output).partition(b"\n")[0]
        if not line and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            # Our child writes its result before exiting 0: user code exited it.
            line = encode(JobResult.exited().to_wire()).rstrip(b"\n")
        if not line:
            # Reported as a crash, not as a failed job: the client retries on a
            # per-build worker, which tells a fork problem from a real crash.
            log(f"{child.label}: pid {child.pid} {describe(status)} after {seconds:.2f}s")
            if child.conn is not None:
                self._reply(child.conn, {"type": "crashed", "how": describe(status)})
                self._close(child.conn)
            return
        result = JobResult.from_wire(json.loads(line))
        log(f"{child.label}: {'ok' if result.ok else result.error_kind} in {seconds:.2f}s "
            f"(pid {child.pid}, {child.root})")
        if child.conn is not None:
            self._reply(child.conn, {"type": "result", "result": json.loads(line)})
            self._close(child.conn)

    def _remove_files(self) -> None:
        if inode(self.paths.socket) == self.inode:
            self.paths.socket.unlink(missing_ok=True)
        try:
            owner = json.loads(self.paths.info.read_text()).get("pid")
        except (OSError, ValueError, AttributeError):
            return
        if owner == self.pid:
            self.paths.info.unlink(missing_ok=True)

