"""The filesystem toolkit: temp names, atomic and verifying writes, fsync, pid liveness, cleanup.

Every write that must never be seen half-done goes through here: the cache's
blobs and entries, downloads from a remote, manifests, the TF Serving tree and
the state files. One temp-name scheme means one cleanup rule: a temp file is
`.<tag>-<pid>-<random>.<name>` beside its destination, so the rename never
crosses filesystems, gc recognises it by its prefix, and a build can tell one
whose writer died (the pid is gone) from one still being written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from rules.core.faults import pause_point

# Reads and writes move this much at a time: a 1 GiB blob is about a thousand
# system calls, and memory use does not depend on the size of the file.
CHUNK = 1 << 20
# The default tag's prefix; the local cache's gc deletes old files named so.
TMP_PREFIX = ".tmp-"
# Longer names would overflow NAME_MAX (255) once the prefix is added.
_MAX_NAME = 200
# The name part is optional: temp folders made before this scheme had none.
_TEMP = re.compile(r"\.(?P<tag>[a-z]+)-(?P<pid>\d+)-(?P<token>[0-9a-f]+)(?:\.(?P<name>.*))?", re.S)
# fsync on a directory is refused by some filesystems; that only loses
# durability, which those filesystems never offered. Anything else is an I/O error.
_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})


@dataclass(frozen=True)
class TempName:
    """The parts of a temp name: what it is for, which process writes it, what it will become."""

    tag: str
    pid: int
    name: str


class DigestMismatch(ValueError):
    """Streamed bytes are not the ones promised: wrong size or wrong sha256."""

    def __init__(self, message: str, *, size: int, sha256: str | None) -> None:
        super().__init__(message)
        self.size = size
        self.sha256 = sha256


def temp_path(dest: Path, tag: str = "tmp") -> Path:
    """A fresh name beside `dest` for writing it; `tag` says what for (tmp, staging, old)."""
    return dest.with_name(f".{tag}-{os.getpid()}-{secrets.token_hex(6)}.{dest.name[:_MAX_NAME]}")


def parse_temp(name: str) -> TempName | None:
    """The parts of a name made by temp_path, or None for any other name."""
    match = _TEMP.fullmatch(name)
    if match is None:
        return None
    return TempName(match["tag"], int(match["pid"]), match["name"] or "")


def fsync_dir(path: Path) -> None:
    """Make renames in `path` durable; a filesystem that cannot fsync a folder is not an error."""
    if os.name == "nt":
        return  # Windows cannot open a folder for fsync; its renames are journaled.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def write_atomic(
    dest: Path,
    data: bytes | Iterable[bytes],
    *,
    durable: bool = True,
    mode: int | None = None,
    sync_dir: bool = True,
) -> None:
    """Replace `dest` with `data` so readers see the old file or the new one, never a mix.

    `data` may be an iterable of chunks that raises half-way (a failed
    verification, a broken download): the temp file is then removed and
    `dest` is untouched. With `durable`, the file and the rename are fsynced
    before this returns; `sync_dir=False` skips the rename's fsync, for files
    whose loss after a crash is harmless (a downloaded cache blob: a miss).
    """
    tmp = temp_path(dest)
    try:
        with open(tmp, "xb") as out:
            for chunk in (data,) if isinstance(data, bytes) else data:
                out.write(chunk)
            if mode is not None:
                os.fchmod(out.fileno(), mode)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        pause_point("write_atomic")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable and sync_dir:
        fsync_dir(dest.parent)


def write_json(dest: Path, value: Any, *, durable: bool = True) -> None:
    """Atomically write `value` as indented, key-sorted JSON (readable and diffable)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(value, indent=1, sort_keys=True) + "\n"
    write_atomic(dest, text.encode("utf-8"), durable=durable)


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable (treated as absent)."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


def read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    """The rest of an open file, CHUNK bytes at a time."""
    while chunk := handle.read(CHUNK):
        yield chunk


def verified(chunks: Iterable[bytes], sha256: str, size: int, what: str) -> Iterator[bytes]:
    """Pass `chunks` through, checking their size and sha256 as they stream.

    More bytes than `size` raise at once, before they are written anywhere: a
    lying source cannot make the caller write more than it promised. A short
    or wrong stream raises DigestMismatch after its last chunk, so the writer
    (write_atomic) discards what it wrote.
    """
    digest = hashlib.sha256()
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise DigestMismatch(f"{what}: more than the expected {size} bytes",
                                 size=seen, sha256=None)
        digest.update(chunk)
        yield chunk
    actual = digest.hexdigest()
    if seen != size:
        raise DigestMismatch(f"{what}: {seen} bytes, expected {size}", size=seen, sha256=actual)
    if actual != sha256:
        raise DigestMismatch(f"{what}: content hashes to {actual[:12]}, expected {sha256[:12]}",
                             size=seen, sha256=actual)


def copy_verified(src: Path, dest: Path, sha256: str, size: int, *, mode: int | None = None,
                  durable: bool = False, clone: bool = False) -> bool:
    """Copy `src` to the new file `dest`, checking its size and sha256 as it streams.

    With `clone`, the copy is a reflink where the filesystem can make one; the
    source is still read and hashed, because a clone shares its blocks and this
    is where a corrupt source is caught. Returns whether it cloned. A mismatch
    raises DigestMismatch; `dest` is then removed.
    """
    try:
        with open(src, "rb") as source, open(dest, "xb") as out:
            cloned = clone and reflink(out.fileno(), source.fileno())
            for chunk in verified(read_chunks(source), sha256, size, str(src)):
                if not cloned:
                    out.write(chunk)
            if mode is not None:
                os.fchmod(out.fileno(), mode)
            if durable:
                out.flush()
                os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(dest)
        raise
    return cloned


# ioctl errors that mean "this filesystem pair cannot clone", as opposed to a
# real I/O failure: ext4/tmpfs say EOPNOTSUPP or ENOTTY, crossing devices EXDEV.
_NO_REFLINK = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM}
)
# Python only names FICLONE from 3.12 on; the value is fixed by the kernel ABI.
_FICLONE = 0x40049409


def reflink(dst_fd: int, src_fd: int) -> bool:
    """Clone src into dst (copy-on-write); False where this filesystem (or OS) cannot."""
    if sys.platform != "linux":
        return False
    import fcntl

    try:
        fcntl.ioctl(dst_fd, getattr(fcntl, "FICLONE", _FICLONE), src_fd)
    except OSError as error:
        if error.errno not in _NO_REFLINK:
            raise
        return False
    return True


def copy_range(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy `size` bytes from the start of src to dst inside the kernel where it can.

    copy_file_range (which is a clone on filesystems that share extents) and
    then sendfile avoid reading the bytes into Python; a filesystem pair that
    supports neither gets a plain read and write. A source shorter than
    `size` raises OSError: the caller's copy would not be the file it hashed.
    """
    done = 0
    ways = ["copy_file_range", "sendfile", "pwrite"]
    if not hasattr(os, "copy_file_range"):
        ways.pop(0)
    while done < size:
        step = min(size - done, 1 << 30)
        try:
            if ways[0] == "copy_file_range":
                n = os.copy_file_range(src_fd, dst_fd, step, done, done)
            elif ways[0] == "sendfile":
                os.lseek(dst_fd, done, os.SEEK_SET)
                n = os.sendfile(dst_fd, src_fd, done, step)
            else:
                n = os.pwrite(dst_fd, os.pread(src_fd, min(step, CHUNK), done), done)
        except OSError as error:
            if error.errno not in _NO_REFLINK or len(ways) == 1:
                raise
            ways.pop(0)  # this filesystem pair cannot: the next way, from where we are
            continue
        if n == 0:
            raise OSError(errno.EIO, f"source ended after {done} of {size} bytes")
        done += n


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited; a zombie counts as exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # "pid (comm) S ...": a zombie has exited, it only waits to be reaped.
            return handle.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def discard(path: Path) -> None:
    """Remove a file or a folder tree if it exists; never raises."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def remove_abandoned(folder: Path, tags: Iterable[str], name: str | None = None) -> int:
    """Discard temp files and folders in `folder` whose writing process is gone.

    Only names made by temp_path with one of `tags` (and, given `name`, for
    that destination) are considered, and only when their pid is neither ours
    nor alive, so a write in progress is never touched. Returns how many went.
    """
    wanted = set(tags)
    removed = 0
    try:
        children = list(folder.iterdir())
    except OSError:
        return 0
    for path in children:
        temp = parse_temp(path.name)
        if temp is None or temp.tag not in wanted or (name is not None and temp.name != name):
            continue
        if temp.pid != os.getpid() and not pid_alive(temp.pid):
            discard(path)
            removed += 1
    return removed
