"""Publish SavedModels into a TF Serving tree: <root>/<model>/<version>/ and models.config.

TF Serving polls each model's base path and loads the highest integer-named
folder, ignoring every other name. So a version is copied under a hidden
staging name and renamed to its number only when complete, and old versions
are renamed to a hidden name before they are deleted: a poller sees whole
versions or none. The caller holds `lock_path(root)` around `publish`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rules.core.files import FileEntry
from rules.core.fsio import (
    copy_verified,
    fsync_dir,
    read_json,
    remove_abandoned,
    temp_path,
    write_atomic,
    write_json,
)
from rules.core.hashing import sha256_json

CONFIG = "models.config"
# Per model: which version holds which content, so an unchanged artifact
# gets no new version. Hidden, so TF Serving never takes it for a version.
STATE = ".rules_keras.json"
LOCK = ".rules_keras.lock"


@dataclass(frozen=True)
class Served:
    """Where a model's current version is, and whether this call created it."""

    model: str
    version: int
    path: Path
    created: bool


def lock_path(root: Path) -> Path:
    """One lock per tree: version numbers and models.config must not be written twice at once."""
    return root / LOCK


def content_digest(files: Iterable[FileEntry]) -> str:
    """Identity of a SavedModel's content: its files' paths, digests, sizes and modes."""
    return sha256_json(sorted([f.path, f.sha256, f.size, f.mode] for f in files))


def versions(model_dir: Path) -> list[int]:
    """The version numbers present, ascending, as TF Serving would see them."""
    try:
        children = list(model_dir.iterdir())
    except OSError:
        return []
    return sorted(int(p.name) for p in children if p.name.isdigit() and p.is_dir())


def is_current(
    root: Path, model: str, digest: str, intact: Callable[[Path], bool] | None = None
) -> bool:
    """True when the newest version of `model` already holds content `digest`, and (given
    `intact`, which checks a version folder's files) its files are whole."""
    model_dir = root / model
    state = read_json(model_dir / STATE)
    present = versions(model_dir)
    return (
        isinstance(state, dict)
        and bool(present)
        and state.get("version") == present[-1]
        and state.get("digest") == digest
        and (intact is None or intact(model_dir / str(present[-1])))
    )


def publish(
    root: Path,
    model: str,
    artifact: Path,
    files: Sequence[FileEntry],
    dirs: Sequence[str],
    label: str,
    keep: int,
    intact: Callable[[Path], bool] | None = None,
) -> Served:
    """Make `artifact` (whose content is `files` and the empty `dirs`) the newest version of
    `model`, unless it already is, whole; prune; write config.

    A new version is the highest number present plus one, so numbers only
    grow even after old versions were pruned. A newest version whose files
    were damaged is not current: the artifact becomes a new version over it.
    Each file is hashed as it is copied, so a version holds exactly `files`.
    """
    digest = content_digest(files)
    model_dir = root / model
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned(model_dir, ("staging", "old"))
    present = versions(model_dir)
    created = not is_current(root, model, digest, intact)
    if created:
        version = (present[-1] if present else 0) + 1
        staging = temp_path(model_dir / str(version), "staging")
        try:
            _copy(artifact, staging, files, dirs)
            fsync_dir(staging)
            os.rename(staging, model_dir / str(version))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(model_dir)
        # After the rename: a crash in between leaves a version the state does
        # not name, which the next build treats as stale and republishes.
        write_json(model_dir / STATE, {"version": version, "digest": digest, "label": label})
    else:
        version = present[-1]
    prune(model_dir, keep)
    write_config(root)
    return Served(model, version, model_dir / str(version), created)


def prune(model_dir: Path, keep: int) -> None:
    """Delete all but the `keep` newest versions, each renamed away first."""
    for old in versions(model_dir)[: -max(keep, 1)]:
        hidden = temp_path(model_dir / str(old), "old")
        os.rename(model_dir / str(old), hidden)
        shutil.rmtree(hidden, ignore_errors=True)
    fsync_dir(model_dir)


def served_models(root: Path) -> list[str]:
    """Models in the tree: folders with at least one version, sorted by name."""
    try:
        children = sorted(root.iterdir())
    except OSError:
        return []
    return [p.name for p in children if not p.name.startswith(".") and versions(p)]


def config_text(root: Path, models: Iterable[str]) -> str:
    """models.config in ModelServerConfig text format; base paths are absolute."""
    lines = ["model_config_list {"]
    for name in models:
        base = str((root / name).resolve()).replace("\\", "\\\\").replace('"', '\\"')
        lines += [
            "  config {",
            f'    name: "{name}"',
            f'    base_path: "{base}"',
            '    model_platform: "tensorflow"',
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_config(root: Path) -> None:
    """Regenerate models.config from the tree; unchanged text is not rewritten.

    TF Serving can poll this file (--model_config_file_poll_wait_seconds), so
    it is replaced atomically and left alone when nothing changed.
    """
    text = config_text(root, served_models(root))
    path = root / CONFIG
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    write_atomic(path, text.encode("utf-8"))


def _copy(artifact: Path, dest: Path, files: Sequence[FileEntry], dirs: Sequence[str]) -> None:
    """A durable copy of the artifact folder, every file checked against its digest."""
    dest.mkdir()
    made = {dest}
    for rel in dirs:
        (dest / rel).mkdir(parents=True, exist_ok=True)
        made.add((dest / rel).parent)
    for entry in files:
        target = dest / entry.path
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        copy_verified(artifact / entry.path, target, entry.sha256, entry.size,
                      mode=entry.mode, durable=True)
    for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(folder)
