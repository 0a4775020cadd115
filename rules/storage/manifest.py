"""The manifest written beside each artifact: its action key, files and verification record."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rules.core.digests import DigestCache
from rules.core.files import MANIFEST_SUFFIX, FileEntry, InvalidEntry, SpecialFile, walk_tree
from rules.core.fsio import read_json, write_json


@dataclass(frozen=True)
class Manifest:
    """Everything needed to decide 'up to date' without a worker, and to explain a rebuild."""

    label: str
    kind: str
    key: str
    inputs: Mapping[str, Any]
    artifact_kind: str
    files: tuple[FileEntry, ...]
    dirs: tuple[str, ...]
    record: Mapping[str, Any]
    outcome: str

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "key": self.key,
            "inputs": dict(self.inputs),
            "artifact_kind": self.artifact_kind,
            "files": [[f.path, f.sha256, f.size, f.mode] for f in self.files],
            "dirs": list(self.dirs),
            "record": dict(self.record),
            "outcome": self.outcome,
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest | None:
        """Parse a manifest; anything malformed reads as 'no manifest' (rebuild, never crash)."""
        try:
            if not isinstance(data["inputs"], dict) or not isinstance(data["record"], dict):
                raise TypeError("inputs and record must be objects")
            if data["artifact_kind"] not in ("directory", "file"):
                raise ValueError(f"unknown artifact kind {data['artifact_kind']!r}")
            return cls(
                label=data["label"],
                kind=data["kind"],
                key=data["key"],
                inputs=data["inputs"],
                artifact_kind=data["artifact_kind"],
                files=tuple(FileEntry(*f) for f in data["files"]),
                dirs=tuple(data["dirs"]),
                record=data["record"],
                outcome=data.get("outcome", "built"),
            )
        except (KeyError, TypeError, ValueError, InvalidEntry):
            return None


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def read(artifact: Path) -> Manifest | None:
    return Manifest.from_json(read_json(manifest_path(artifact)))


def write(artifact: Path, manifest: Manifest) -> None:
    # Not fsynced: see publish(); a lost or stale manifest only means a rebuild.
    write_json(manifest_path(artifact), manifest.to_json(), durable=False)


def cold(artifacts: Iterable[Path], toolchain: Mapping[str, object]) -> int:
    """How many of `artifacts` have no manifest, or one built with another toolchain (after an
    upgrade every target rebuilds): the size of a cold build, read from the manifests alone."""
    count = 0
    for artifact in artifacts:
        manifest = read(artifact)
        count += manifest is None or manifest.inputs.get("toolchain") != toolchain
    return count


def intact(artifact: Path, manifest: Manifest, digests: DigestCache) -> bool:
    """True when the artifact is exactly what the manifest lists: every file present with its
    recorded content, and (for a folder) no file or folder that the manifest does not list.

    Digests come from the stat-keyed cache, so an untouched artifact costs one
    stat per file and one listing per folder, not a re-hash.
    """
    if manifest.artifact_kind == "file":
        found = {entry.path: artifact for entry in manifest.files}
        stats: dict[str, os.stat_result] = {}
    else:
        try:
            files, empty = walk_tree(artifact)
        except (OSError, SpecialFile):
            return False
        found = {rel: path for rel, path, _ in files}
        stats = {rel: st for rel, _, st in files}
        if set(found) != {f.path for f in manifest.files} or set(empty) != set(manifest.dirs):
            return False
    for entry in manifest.files:
        path = found[entry.path]
        try:
            st = stats.get(entry.path) or os.stat(path)
            if st.st_size != entry.size or digests.digest(path, st) != entry.sha256:
                return False
        except OSError:
            return False
    return True


def listing(folder: Path) -> tuple[set[str], set[str]] | None:
    """The regular files and the empty folders under `folder`, as posix paths relative to it;
    None when it is not a folder or holds anything else (a symlink, a socket)."""
    try:
        files, empty = walk_tree(folder)
    except (OSError, SpecialFile):
        return None
    return {rel for rel, _, _ in files}, set(empty)
