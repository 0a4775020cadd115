"""The file values every layer shares: one artifact file, a safe relative path, a tree scan."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rules.core.digests import file_stamp
from rules.core.errors import CacheError
from rules.core.hashing import sha256_file

ArtifactKind = Literal["directory", "file"]
# Each artifact's manifest sits beside it: `<artifact>.manifest.json`.
MANIFEST_SUFFIX = ".manifest.json"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# Only permission bits are kept: setuid/setgid/sticky coming back out of a
# cache that other people may have written is never what a model export wants.
MODE_MASK = 0o777


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
        if not 0 <= self.mode <= MODE_MASK:
            raise InvalidEntry(
                f"{self.path}: mode must be within 0o000-0o777. Received: {self.mode:#o}"
            )


class SpecialFile(ValueError):
    """A tree holds something other than regular files and folders (a symlink, a socket)."""


def walk_tree(root: Path) -> tuple[list[tuple[str, Path, os.stat_result]], list[str]]:
    """The regular files (relative posix path, path, stat) and the empty folders under the
    folder `root`, both sorted; raises SpecialFile naming the first other thing found."""
    files: list[tuple[str, Path, os.stat_result]] = []
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
                files.append((rel, Path(child.path), child_st))
            else:
                raise SpecialFile(rel)
    files.sort()
    empty_dirs.sort()
    return files, empty_dirs


def scan_tree(
    root: Path, known: Mapping[str, tuple[list[int | str], str]] | None = None
) -> tuple[tuple[FileEntry, ...], tuple[str, ...]]:
    """Hash every regular file under `root` and list its empty directories, both sorted.

    `root` may also be a single regular file: the result is then one entry
    named after the file and no directories. Symlinks and special files are
    refused (CacheError) because a cache entry could not reproduce them.
    `known` maps a relative path to (file_stamp, sha256) from whoever hashed
    it before (the job, while it verified): a file with that exact stamp is
    not read again.
    """
    st = os.lstat(root)
    if stat.S_ISREG(st.st_mode):
        return (_file_entry(root, root.name, st, known),), ()
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"cannot cache {root}: it is neither a regular file nor a directory")
    try:
        files, empty_dirs = walk_tree(root)
    except SpecialFile as err:
        raise CacheError(
            f"cannot cache {root}: {err} is a symlink or special file; "
            "artifacts must contain only regular files and directories"
        ) from None
    entries = tuple(_file_entry(path, rel, file_st, known) for rel, path, file_st in files)
    return entries, tuple(empty_dirs)


def _file_entry(path: Path, rel: str, st: os.stat_result,
                known: Mapping[str, tuple[list[int | str], str]] | None) -> FileEntry:
    # The size comes from stat, not from the read: `store` refuses a file
    # whose size or mtime moved after this scan.
    hashed = known.get(rel) if known else None
    try:
        sha256 = hashed[1] if hashed and hashed[0] == file_stamp(st) else sha256_file(path)
        return FileEntry(rel, sha256, st.st_size, stat.S_IMODE(st.st_mode) & MODE_MASK)
    except InvalidEntry as error:
        raise CacheError(f"cannot cache {path}: {error}") from error
