"""What the export server and its clients share: its files, its fingerprint and its messages."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rules
from rules.core.errors import RulesError
from rules.core.hashing import sha256_json
from rules.execution.protocol import encode

SERVER_DIR = "server"
# A request carries the job, the caller's environment and its toolchain; far
# below this. The cap only stops a confused peer from growing a buffer forever.
MAX_MESSAGE = 16 << 20
# sockaddr_un.sun_path holds 108 bytes on Linux, 104 on macOS.
_MAX_SOCKET_PATH = 100
# Read by the runtime when it starts, which a spare child does before its job
# arrives (with the server's environment): a change must restart the server.
# They do not change results, so unlike NUMERICS_ENV they stay out of action keys.
RUNTIME_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "TF_NUM_INTEROP_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "OMP_NUM_THREADS",
    "JAX_PLATFORMS",
)


class ServerFolderError(RulesError):
    """The server folder cannot be made private to this user."""


@dataclass(frozen=True)
class ServerPaths:
    """The files of one server: <folder>/<name>.{sock,json,log,lock}.

    Shared servers live in the per-user runtime folder under a name keyed by
    their environment (rules.execution.server.runtime); a Ray node keeper's
    live in its state folder under the backend's name (server_paths).
    """

    folder: Path
    name: str
    backend: str

    @property
    def socket(self) -> Path:
        return self.folder / f"{self.name}.sock"

    @property
    def info(self) -> Path:
        """JSON written by the server once it listens: pid, fingerprint, start time."""
        return self.folder / f"{self.name}.json"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    @property
    def lock(self) -> Path:
        """Held by a client while it checks, cleans up or starts the server."""
        return self.folder / f"{self.name}.lock"


def private_folder(folder: Path) -> Path:
    """Make `folder` (and its parents) exist, owned by this user and mode 0700; return it.

    The socket accepts jobs that run arbitrary model code as this user, so
    nobody else may reach it: the folder's mode is what guards it. lstat, so
    that a symlink planted in a shared /tmp is refused, not followed.
    """
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
    except OSError as err:
        raise ServerFolderError(f"cannot create {folder}: {err}") from err
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ServerFolderError(
            f"{folder} must be a folder owned by this user; remove it and build again"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        try:
            os.chmod(folder, 0o700)
        except OSError as err:
            raise ServerFolderError(f"cannot make {folder} owner-only: {err}") from err
    return folder


def server_paths(state: Path, backend: str, *, create: bool = True) -> ServerPaths:
    """A server kept in a state folder (a Ray node keeper's): <state>/server/<backend>.*."""
    folder = state / SERVER_DIR
    if create:
        private_folder(folder)
    return ServerPaths(folder, backend, backend)


def fingerprint(backend: str, toolchain: Mapping[str, object]) -> str:
    """What a warm server has loaded; a server refuses jobs from a caller whose differs.

    `toolchain` is the action key's toolchain section (versions and the
    numerics environment). The interpreter, PYTHONPATH and the rules source
    are added because the server imported them once and would otherwise run
    jobs with a stale copy; RUNTIME_ENV because a spare reads it early.
    """
    return sha256_json(
        {
            "backend": backend,
            "toolchain": dict(toolchain),
            "executable": sys.executable,
            "pythonpath": os.environ.get("PYTHONPATH", ""),
            "runtime_env": {k: os.environ[k] for k in RUNTIME_ENV if k in os.environ},
            "rules_keras": rules.__version__,
            "rules_source": _source_stamp(),
        }
    )


def _source_stamp() -> list[list[object]]:
    """Size and mtime of every rules module: an editable install changes without a version."""
    package = Path(rules.__file__).resolve().parent
    stamps: list[list[object]] = []
    for path in sorted(package.rglob("*.py")):
        with contextlib.suppress(OSError):
            st = path.stat()
            stamps.append([path.relative_to(package).as_posix(), st.st_size, st.st_mtime_ns])
    return stamps


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address that bind() and connect() accept for `path`, however long it is.

    Long workspace paths overflow sun_path; on Linux the folder is then
    reached through an open descriptor (/proc/self/fd/N/name) instead.
    """
    if len(os.fsencode(path)) < _MAX_SOCKET_PATH or not sys.platform.startswith("linux"):
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def send(sock: socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    """Send one message; `fds` travel with its first bytes (SCM_RIGHTS)."""
    data = encode(message)
    sent = socket.send_fds(sock, [data], list(fds)) if fds else 0
    sock.sendall(data[sent:])


class LineReader:
    """Reads newline-terminated JSON messages from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def read(self) -> dict[str, Any] | None:
        """The next message, or None when the peer closed the connection first."""
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(1 << 16)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self._buffer += chunk
            if len(self._buffer) > MAX_MESSAGE:
                return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            return None
        return message


def read_info(paths: ServerPaths) -> dict[str, Any] | None:
    """The server's info file, or None if absent or unreadable."""
    try:
        data = json.loads(paths.info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
