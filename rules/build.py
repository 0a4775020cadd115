"""A build session: decides what is up to date, runs jobs in workers and publishes results.

Independent of doit: the doit boundary (rules.workspace) only turns these
methods into task dicts. Correctness never depends on doit's DB: up-to-date
means the manifest beside the artifact records the current action key and the
artifact's files are intact.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rules.analysis import action_key
from rules.analysis.action_key import ActionKey, InputMissing
from rules.analysis.digests import DigestCache
from rules.analysis.graph import Action, BuildGraph, analyse
from rules.analysis.imports import ImportScanner
from rules.analysis.toolchain import INSTALL_HINT, Toolchain, detect
from rules.cache.records import scan_tree
from rules.errors import ExportError
from rules.execution.pool import WorkerPool
from rules.execution.protocol import Job
from rules.loading.build_files import load_workspace
from rules.loading.labels import Label
from rules.loading.targets import ExportTarget, TrainTarget
from rules.storage import manifest as manifest_io
from rules.storage.manifest import Manifest
from rules.storage.publish import discard, publish, remove, staging_path

STATE_DIR = ".rules_keras"


@dataclass(frozen=True)
class Outcome:
    """How a target finished: built, restored (from a cache) or up to date."""

    label: str
    status: str
    reasons: tuple[str, ...] = ()


class BuildSession:
    """Everything one `doit` invocation knows about the workspace."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / STATE_DIR
        self.state.mkdir(exist_ok=True)
        self.digests = DigestCache(self.state / "digests.json")
        self.scanner = ImportScanner(root, self.digests, self.state / "imports.json")
        self._toolchain: Toolchain | None = None
        self.graph: BuildGraph = analyse(root, load_workspace(root))
        self.actions: dict[Label, Action] = {a.label: a for a in self.graph.actions}
        self.pool = WorkerPool(root, on_start=self._worker_started)
        self._reasons: dict[Label, list[str]] = {}
        self._lock = threading.Lock()

    @property
    def toolchain(self) -> Toolchain:
        if self._toolchain is None:
            self._toolchain = detect(self.state / "toolchain.json")
        return self._toolchain

    def artifact(self, action: Action) -> Path:
        return self.root / action.output

    def key(self, action: Action) -> ActionKey:
        return action_key.compute(action, self.root, self.digests, self.scanner, self.toolchain)

    # -- up to date -----------------------------------------------------------

    def is_up_to_date(self, label: Label) -> bool:
        """True when the manifest matches the current key and the artifact is intact."""
        action = self.actions[label]
        dest = self.artifact(action)
        previous = manifest_io.read(dest)
        try:
            key = self.key(action)
        except InputMissing as missing:
            self._set_reasons(label, [f"input {missing} is missing"])
            return False
        if previous is not None and previous.key == key.digest:
            if manifest_io.intact(dest, previous, self.digests):
                return True
            self._set_reasons(label, [f"{action.output} is missing or was modified"])
            return False
        old_inputs = previous.inputs if previous else None
        self._set_reasons(label, action_key.explain(old_inputs, key.inputs))
        return False

    def _set_reasons(self, label: Label, reasons: list[str]) -> None:
        with self._lock:
            self._reasons[label] = reasons

    # -- building -------------------------------------------------------------

    def build(self, label: Label) -> Outcome:
        """Build one action in a worker and publish it; raises ExportError on failure."""
        action = self.actions[label]
        with self._lock:
            reasons = self._reasons.pop(label, ["forced (doit -a or run directly)"])
        missing = self.toolchain.missing_for(action.backend)
        if missing:
            raise ExportError(
                str(label),
                f"backend {action.backend!r} needs {', '.join(missing)}, which is not "
                f"installed; {INSTALL_HINT[action.backend]}",
            )
        try:
            key = self.key(action)
        except InputMissing as err:
            raise ExportError(str(label), f"input {err} is missing") from err
        self._log(label, "building: " + "; ".join(reasons))
        dest = self.artifact(action)
        staged = staging_path(dest)
        try:
            result = self.pool.run(self._job(action, staged))
            if not result.ok:
                raise ExportError(str(label), result.message, result.details)
            try:
                after = self.key(action)
            except InputMissing:
                after = None
            if after is None or after.digest != key.digest:
                # The artifact may mix old and new inputs: publish it so the user
                # sees the result, but under the old key so the next run rebuilds
                # (Bazel #3360 for the cache side of the same race).
                self._log(label, "warning: inputs changed during the build; will rebuild next time")
            files, dirs = scan_tree(staged)
            kind = "directory" if staged.is_dir() else "file"
            manifest = Manifest(
                label=str(label),
                kind=action.kind,
                key=key.digest,
                inputs=key.inputs,
                artifact_kind=kind,
                files=files,
                dirs=dirs,
                record=result.record,
                outcome="built",
            )
            publish(dest, staged, manifest)
        finally:
            discard(staged)
        seconds = result.record.get("seconds")
        self._log(label, f"built {action.output} in {seconds:.2f}s" if seconds else "built")
        return Outcome(str(label), "built", tuple(reasons))

    def _job(self, action: Action, staged: Path) -> Job:
        target = action.target
        options: dict[str, Any] = {"weights_display": action.weights}
        if isinstance(target, TrainTarget):
            options.update(train=target.train, seed=target.seed)
        else:
            assert isinstance(target, ExportTarget)
            options.update(
                format=target.format,
                endpoints=[ep.to_json() for ep in target.endpoints],
                variable_collections=[list(p) for p in target.variable_collections],
                track=list(target.track),
                tolerance=target.tolerance,
                jax2tf_kwargs=dict(target.jax2tf_kwargs) if target.jax2tf_kwargs else None,
                model=str(action.model.label) if action.model else None,
            )
        return Job(
            label=str(action.label),
            kind=action.kind,
            backend=action.backend,
            factory=action.factory,
            weights=str(self.root / action.weights) if action.weights else None,
            out=str(staged),
            options=options,
        )

    def clean(self, label: Label) -> None:
        remove(self.artifact(self.actions[label]))

    def save_state(self) -> None:
        self.digests.save()
        self.scanner.save()

    def close(self) -> None:
        self.save_state()
        self.pool.close()

    def _worker_started(self, backend: str) -> None:
        print(f"rules_keras: starting a {backend} worker", file=sys.stderr, flush=True)

    def _log(self, label: Label, message: str) -> None:
        print(f"  {label}: {message}", flush=True)
