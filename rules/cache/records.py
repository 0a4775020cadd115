"""The action cache's record of one artifact (ActionResult) and its REAPI encoding."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from rules.cache import reapi
from rules.core.errors import CacheError
from rules.core.files import ArtifactKind, FileEntry, InvalidEntry, check_relpath
from rules.core.hashing import canonical_json

# Reserved keys of the JSON carried in `stdout_raw`. The whole `_` prefix is
# reserved so later versions can add keys without colliding with callers.
_RESERVED_PREFIX = "_"
_KEY_MODES = "_modes"
_KEY_DIRS = "_dirs"
_KEY_KIND = "_kind"


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


