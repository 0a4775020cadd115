"""Publish a finished artifact: into artifacts/ with its manifest, and into the TF Serving tree.

Both steps record the digests they already know (the build hashed the files,
a restore verified them, a served copy is hashed as it is written), so the
first no-op after a build reads none of those bytes again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rules.analysis.action_key import ActionKey
from rules.analysis.graph import Action
from rules.config import Settings
from rules.core.digests import DigestCache
from rules.core.errors import ExportError
from rules.core.files import FileEntry
from rules.core.fsio import DigestMismatch
from rules.loading.labels import Label
from rules.loading.targets import ExportTarget
from rules.storage import manifest as manifest_io
from rules.storage import serving
from rules.storage.manifest import Manifest
from rules.storage.publish import publish


class Publisher:
    """Puts artifacts where users and servers read them; one per build session."""

    def __init__(self, settings: Settings, state: Path, digests: DigestCache,
                 log: Callable[[Label, str], None]) -> None:
        self._settings = settings
        self._state = state
        self._digests = digests
        self._log = log

    def publish(self, action: Action, key: ActionKey, dest: Path, staged: Path,
                files: tuple[FileEntry, ...], dirs: tuple[str, ...],
                record: Mapping[str, Any], outcome: str) -> None:
        """Move `staged` to `dest` with its manifest, under the output's lock."""
        manifest = Manifest(
            label=str(action.label),
            kind=action.kind,
            key=key.digest,
            inputs=key.inputs,
            artifact_kind="directory" if staged.is_dir() else "file",
            files=files,
            dirs=dirs,
            record=record,
            outcome=outcome,
        )
        from rules.locks import hold, output_lock_path  # filelock: not needed by a no-op

        lock = output_lock_path(self._state, action.output)
        with hold(lock, what=f"publishing {action.output}", timeout=self._settings.lock_timeout,
                  on_wait=lambda msg: self._log(action.label, msg)):
            publish(dest, staged, manifest)
        self._record(dest, files, single=manifest.artifact_kind == "file")

    def served(self, action: Action, manifest: Manifest) -> bool:
        """False when the target's TF Serving model lacks this artifact, whole."""
        name = serving_name(action)
        root = self._settings.serving_root
        if name is None or root is None:
            return True
        return serving.is_current(root, name, serving.content_digest(manifest.files),
                                  lambda version: manifest_io.intact(version, manifest,
                                                                     self._digests))

    def serve(self, action: Action, dest: Path) -> None:
        """Publish the artifact as the newest version of its TF Serving model, if it has one."""
        name = serving_name(action)
        if name is None:
            return
        root = self._settings.serving_root
        if root is None:
            self._log(action.label, f"serving={name!r} is set but [tool.rules_keras] has no "
                      "serving_root; not published to TF Serving")
            return
        manifest = manifest_io.read(dest)
        if manifest is None:
            raise ExportError(str(action.label), f"{action.output} has no manifest to serve")
        from rules.locks import hold

        with hold(serving.lock_path(root), what=f"the TF Serving tree {root}",
                  timeout=self._settings.lock_timeout,
                  on_wait=lambda msg: self._log(action.label, msg)):
            try:
                served = serving.publish(
                    root, name, dest, manifest.files, manifest.dirs, str(action.label),
                    self._settings.serving_keep,
                    lambda version: manifest_io.intact(version, manifest, self._digests),
                )
            except (OSError, DigestMismatch) as err:
                raise ExportError(
                    str(action.label), f"publishing to TF Serving under {root} failed: {err}"
                ) from err
        if served.created:
            self._record(served.path, manifest.files)
            self._log(action.label, f"serving {name!r} version {served.version} at {served.path}")

    def _record(self, folder: Path, files: tuple[FileEntry, ...], *, single: bool = False) -> None:
        for entry in files:
            self._digests.record(folder if single else folder / entry.path, entry.sha256)


def serving_name(action: Action) -> str | None:
    """The TF Serving model a target publishes to, if any."""
    target = action.target
    return target.serving if isinstance(target, ExportTarget) else None
