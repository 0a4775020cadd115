"""Cache value objects, their REAPI encoding, and the artifact scanner that produces them."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from rules.cache import reapi
from rules.hashing import canonical_json, sha256_file

ArtifactKind = Literal["directory", "file"]

# Reserved keys of the JSON carried in `stdout_raw`. The whole `_` prefix is
# reserved so later versions can add keys without colliding with callers.
_RESERVED_PREFIX = "_"
_KEY_MODES = "_modes"
_KEY_DIRS = "_dirs"
_KEY_KIND = "_kind"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# Only permission bits are kept: setuid/setgid/sticky coming back out of a
# cache that other people may have written is never what a model export wants.
_MODE_MASK = 0o777


class CacheError(Exception):
    """Any failure of the cache. Callers log it as a warning and build locally instead."""


class CacheCorrupt(CacheError):
    """A blob's content does not match its name; it has been evicted."""


class CacheMiss(CacheError):
    """An entry vanished between lookup and use (a concurrent gc); treat it as a miss."""


class InvalidEntry(CacheError):
    """An AC entry cannot be trusted: undecodable, unsafe paths, or inconsistent fields."""


def is_sha256(value: str) -> bool:
    """True for a 64-character lowercase sha256 hex string, the only key shape the cache uses."""
    return _SHA256_RE.fullmatch(value) is not None


def check_relpath(path: str) -> str:
    """Return `path` if it is a safe, normalised relative posix path, else raise InvalidEntry.

    Every path that comes out of a cache entry goes through here before it is
    joined to a destination, so a crafted entry can never write outside it.
    """
    problem = None
    if not path:
        problem = "it is empty"
    elif "\\" in path or "\0" in path:
        problem = "it contains a backslash or NUL"
    elif path.startswith("/") or re.match(r"[A-Za-z]:", path):
        problem = "it is absolute"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        problem = "it has an empty, '.' or '..' component"
    if problem is not None:
        raise InvalidEntry(f"unsafe path in cache entry: {problem}. Received: path={path!r}")
    return path


@dataclass(frozen=True)
class FileEntry:
    """One regular file of an artifact and the CAS blob holding its bytes."""

    path: str  # posix, relative to the artifact root; the file name for a single-file artifact
    sha256: str  # lowercase hex, also the blob's name in CAS
    size: int  # bytes
    mode: int  # permission bits only (0o777 mask)

    def __post_init__(self) -> None:
        check_relpath(self.path)
        if not is_sha256(self.sha256):
            raise InvalidEntry(
                f"{self.path}: sha256 is not 64 lowercase hex. Received: {self.sha256!r}"
            )
        if self.size < 0:
            raise InvalidEntry(f"{self.path}: size must be >= 0. Received: size={self.size}")
        if not 0 <= self.mode <= _MODE_MASK:
            raise InvalidEntry(
                f"{self.path}: mode must be within 0o000-0o777. Received: {self.mode:#o}"
            )


@dataclass(frozen=True)
class ActionResult:
    """What the action cache remembers about one export: its files and opaque metadata."""

    files: tuple[FileEntry, ...]
    # Caller-owned JSON data (endpoints, verification, key inputs). Opaque to the
    # cache; keys starting with "_" are reserved for the cache's own bookkeeping.
    metadata: Mapping[str, Any]
    # Directories with nothing in them, which output_files alone cannot express.
    dirs: tuple[str, ...] = ()
    # "file" when the artifact is one file (e.g. `model.keras`): then `files`
    # has exactly one entry whose path is that file's name, and materialize
    # writes it at `dest` whatever that is called.
    kind: ArtifactKind = "directory"

    def __post_init__(self) -> None:
        _check_layout(self.files, self.dirs, self.kind)
        reserved = sorted(k for k in self.metadata if k.startswith(_RESERVED_PREFIX))
        if reserved:
            raise ValueError(
                f"metadata keys starting with {_RESERVED_PREFIX!r} are reserved for the cache. "
                f"Received: {reserved}"
            )

    def to_reapi(self) -> bytes:
        """Encode as a REAPI v2 ActionResult; metadata, modes and dirs go in `stdout_raw`."""
        payload = dict(self.metadata)
        payload[_KEY_MODES] = {f.path: f.mode for f in self.files}
        payload[_KEY_DIRS] = list(self.dirs)
        payload[_KEY_KIND] = self.kind
        try:
            stdout = canonical_json(payload).encode("ascii")
        except (TypeError, ValueError) as error:
            raise ValueError(f"cache metadata must be JSON data: {error}") from error
        outputs = tuple(
            reapi.OutputFile(f.path, reapi.Digest(f.sha256, f.size), bool(f.mode & 0o111))
            for f in self.files
        )
        return reapi.encode_action_result(reapi.ActionResultMessage(outputs, 0, stdout))

    @classmethod
    def from_reapi(cls, data: bytes) -> ActionResult:
        """Decode bytes written by `to_reapi`; anything untrustworthy raises InvalidEntry."""
        try:
            message = reapi.decode_action_result(data)
        except reapi.DecodeError as error:
            raise InvalidEntry(f"AC entry is not a valid ActionResult: {error}") from error
        if message.exit_code != 0:
            raise InvalidEntry(
                f"AC entry records a failed action. Received: exit_code={message.exit_code}"
            )
        try:
            payload = json.loads(message.stdout_raw.decode("utf-8")) if message.stdout_raw else {}
        except (UnicodeDecodeError, ValueError) as error:
            raise InvalidEntry(f"AC entry metadata is not JSON: {error}") from error
        if not isinstance(payload, dict):
            raise InvalidEntry(
                f"AC entry metadata must be a JSON object. Received: {type(payload).__name__}"
            )
        modes = payload.pop(_KEY_MODES, {})
        dirs = payload.pop(_KEY_DIRS, [])
        kind = payload.pop(_KEY_KIND, "directory")
        if not isinstance(modes, dict) or not all(isinstance(m, int) for m in modes.values()):
            raise InvalidEntry(f"AC entry {_KEY_MODES} must map paths to ints")
        if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
            raise InvalidEntry(f"AC entry {_KEY_DIRS} must be a list of paths")
        if kind not in ("directory", "file"):
            raise InvalidEntry(
                f"AC entry {_KEY_KIND} must be 'directory' or 'file'. Received: {kind!r}"
            )
        for unknown in [k for k in payload if k.startswith(_RESERVED_PREFIX)]:
            # Written by a newer version; dropping it keeps this reader usable.
            del payload[unknown]
        files = []
        for output in message.output_files:
            # Entries written by other REAPI clients carry no modes: fall back to
            # what Bazel itself materialises for the executable bit.
            default = 0o755 if output.is_executable else 0o644
            mode = modes.get(output.path, default)
            if isinstance(mode, bool):
                raise InvalidEntry(f"AC entry mode of {output.path!r} is not an int")
            files.append(FileEntry(output.path, output.digest.hash, output.digest.size_bytes, mode))
        return cls(tuple(files), MappingProxyType(payload), tuple(dirs), kind)


def _check_layout(files: tuple[FileEntry, ...], dirs: tuple[str, ...], kind: str) -> None:
    """Reject entries that could not be materialised as a tree: duplicates and file/dir clashes."""
    for d in dirs:
        check_relpath(d)
    if kind == "file":
        if len(files) != 1 or dirs or "/" in files[0].path:
            raise InvalidEntry(
                "a single-file artifact must have exactly one top-level file and no dirs. "
                f"Received: files={[f.path for f in files]}, dirs={list(dirs)}"
            )
        return
    if kind != "directory":
        raise InvalidEntry(f"artifact kind must be 'directory' or 'file'. Received: {kind!r}")
    file_paths = [f.path for f in files]
    seen = set(file_paths)
    if len(seen) != len(file_paths):
        raise InvalidEntry("AC entry lists the same file twice")
    for path in (*file_paths, *dirs):
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in seen:
                raise InvalidEntry(f"AC entry uses file {parent!r} as a directory of {path!r}")
    clash = seen.intersection(dirs)
    if clash:
        raise InvalidEntry(f"AC entry lists {sorted(clash)} both as a file and as a directory")


def scan_tree(root: Path) -> tuple[tuple[FileEntry, ...], tuple[str, ...]]:
    """Hash every regular file under `root` and list its empty directories, both sorted.

    `root` may also be a single regular file: the result is then one entry
    named after the file and no directories. Symlinks and special files are
    refused (CacheError) because a cache entry could not reproduce them.
    """
    st = os.lstat(root)
    if stat.S_ISREG(st.st_mode):
        return (_file_entry(root, root.name, st),), ()
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"cannot cache {root}: it is neither a regular file nor a directory")
    files: list[FileEntry] = []
    empty_dirs: list[str] = []
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as entries:
            children = list(entries)
        if not children and prefix:
            empty_dirs.append(prefix.rstrip("/"))
        for child in children:
            rel = prefix + child.name
            child_st = child.stat(follow_symlinks=False)
            if stat.S_ISDIR(child_st.st_mode):
                stack.append((Path(child.path), rel + "/"))
            elif stat.S_ISREG(child_st.st_mode):
                files.append(_file_entry(Path(child.path), rel, child_st))
            else:
                raise CacheError(
                    f"cannot cache {root}: {rel} is a symlink or special file; "
                    "artifacts must contain only regular files and directories"
                )
    files.sort(key=lambda f: f.path)
    empty_dirs.sort()
    return tuple(files), tuple(empty_dirs)


def _file_entry(path: Path, rel: str, st: os.stat_result) -> FileEntry:
    # The size comes from stat, not from the read: `store` re-hashes while it
    # copies into CAS and refuses a file that changed in between.
    try:
        return FileEntry(rel, sha256_file(path), st.st_size, stat.S_IMODE(st.st_mode) & _MODE_MASK)
    except InvalidEntry as error:
        raise CacheError(f"cannot cache {path}: {error}") from error
