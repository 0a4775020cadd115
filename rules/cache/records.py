"""The action cache's record of one artifact (ActionResult) and its REAPI encoding."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from rules.cache import reapi
from rules.core.errors import CacheError
from rules.core.files import ArtifactKind, FileEntry, InvalidEntry, check_relpath, is_sha256
from rules.core.hashing import canonical_json

# Reserved keys of the JSON carried in `stdout_raw`. The whole `_` prefix is
# reserved so later versions can add keys without colliding with callers.
_RESERVED_PREFIX = "_"
_KEY_RECORD = "_record"
_KEY_ACTION = "_key"
_KEY_LABEL = "_label"
_KEY_FILES = "_files"
_KEY_DIRS = "_dirs"
_KEY_KIND = "_kind"
# Version of our record. 2: the entry names its action key and label and lists
# every output with its digest, so that an entry answers one question only and
# a tampered output list is seen (issue 15 §1). Entries of any other version are
# refused, never guessed at.
RECORD_VERSION = 2


class CacheCorrupt(CacheError):
    """A blob's content does not match its name; it has been evicted."""


class CacheMiss(CacheError):
    """An entry vanished between lookup and use (a concurrent gc); treat it as a miss."""


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
    # The action key this entry answers, and the label that built it: what
    # rules.cache.validate compares with the question asked.
    key: str = ""
    label: str = ""

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
        payload[_KEY_RECORD] = RECORD_VERSION
        payload[_KEY_ACTION] = self.key
        payload[_KEY_LABEL] = self.label
        payload[_KEY_FILES] = {f.path: [f.sha256, f.size, f.mode] for f in self.files}
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
        version = payload.pop(_KEY_RECORD, None)
        if version != RECORD_VERSION:
            raise InvalidEntry(
                f"AC entry carries no rules_keras record of version {RECORD_VERSION}. "
                f"Received: {_KEY_RECORD}={version!r}"
            )
        key = payload.pop(_KEY_ACTION, None)
        label = payload.pop(_KEY_LABEL, None)
        listed = payload.pop(_KEY_FILES, None)
        dirs = payload.pop(_KEY_DIRS, None)
        # No defaults: an entry that does not say what it is (an empty body is
        # a valid, empty ActionResult) is refused, never taken for a directory.
        kind = payload.pop(_KEY_KIND, None)
        if not isinstance(key, str) or not isinstance(label, str):
            raise InvalidEntry(f"AC entry {_KEY_ACTION} and {_KEY_LABEL} must be strings")
        if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
            raise InvalidEntry(f"AC entry {_KEY_DIRS} must be a list of paths")
        if kind not in ("directory", "file"):
            raise InvalidEntry(
                f"AC entry {_KEY_KIND} must be 'directory' or 'file'. Received: {kind!r}"
            )
        for unknown in [k for k in payload if k.startswith(_RESERVED_PREFIX)]:
            # Written by a newer version; dropping it keeps this reader usable.
            del payload[unknown]
        files = _files(listed, message.output_files)
        return cls(tuple(files), MappingProxyType(payload), tuple(dirs), kind, key, label)


def _files(listed: Any, outputs: tuple[reapi.OutputFile, ...]) -> list[FileEntry]:
    """The outputs, checked against our record: the same paths, digests and sizes, no more.

    The REAPI fields are what a server (or a tool rewriting entries) may
    change; our record travels in the same message. A swapped digest, a
    renamed path or a dropped file makes them disagree.
    """
    if not isinstance(listed, dict):
        raise InvalidEntry(f"AC entry {_KEY_FILES} must map paths to [sha256, size, mode]")
    files: list[FileEntry] = []
    for output in outputs:
        item = listed.get(output.path)
        if item is None:
            raise InvalidEntry(f"AC entry output {output.path!r} is not in its record")
        if (not isinstance(item, list) or len(item) != 3
                or not all(type(v) is t for v, t in zip(item, (str, int, int), strict=True))):
            raise InvalidEntry(f"AC entry record of {output.path!r} is malformed")
        sha256, size, mode = item
        if (output.digest.hash, output.digest.size_bytes) != (sha256, size):
            raise InvalidEntry(
                f"AC entry output {output.path!r} has digest {output.digest.hash[:12]}/"
                f"{output.digest.size_bytes}, its record {str(sha256)[:12]}/{size}"
            )
        if not is_sha256(sha256) or size < 0:
            raise InvalidEntry(f"AC entry digest of {output.path!r} is not a sha256 and a size")
        files.append(FileEntry(output.path, sha256, size, mode))
    dropped = sorted(set(listed) - {f.path for f in files})
    if dropped:
        raise InvalidEntry(f"AC entry record lists {dropped}, which its outputs lack")
    return files


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


