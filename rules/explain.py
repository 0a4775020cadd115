"""`doit explain`: for each target, up to date, restorable, or why it would be built, and
which artifacts belong to no target any more. Decides like a build, builds nothing, and
imports no backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rules.build import BuildSession
from rules.core.files import MANIFEST_SUFFIX
from rules.core.fsio import parse_temp
from rules.loading.labels import Label

State = Literal["up to date", "would restore", "would build", "cannot be built"]


@dataclass(frozen=True)
class Verdict:
    """What `doit export` would do with one target, and why."""

    label: str
    state: State
    details: tuple[str, ...]

    def lines(self) -> list[str]:
        head = f"{self.label}: {self.state}"
        if self.state == "cannot be built":
            # The error names the label itself.
            return [f"{head}:", *(f"  {d}" for d in self.details)]
        if self.state == "would restore":
            return [f"{head} {self.details[0]}", *(f"  - {d}" for d in self.details[1:])]
        return [head, *(f"  - {d}" for d in self.details)]


def verdicts(session: BuildSession, labels: list[Label] | None) -> list[Verdict]:
    """One verdict per target (every target when `labels` is None), broken ones included."""
    wanted = None if labels is None else set(labels)
    found: list[Verdict] = []
    for failure in session.graph.failures:
        if wanted is None or (failure.label is not None and failure.label in wanted):
            found.append(Verdict(failure.name, "cannot be built", (failure.message,)))
    for action in session.graph.actions:
        if wanted is not None and action.label not in wanted:
            continue
        check = session.check(action.label)
        if check.up_to_date:
            found.append(Verdict(str(action.label), "up to date", ()))
            continue
        source = (session.caches.cached(session.question(action, check.key))
                  if check.key is not None else None)
        if source is not None:
            found.append(Verdict(str(action.label), "would restore",
                                 (f"from the {source} cache", *check.reasons)))
        else:
            found.append(Verdict(str(action.label), "would build", check.reasons))
    return found


def orphans(session: BuildSession) -> list[Path]:
    """Artifacts and manifests under artifacts/ that no target writes, and folders left empty.

    Hidden temp names are the build's own (staging, replaced copies); those
    of a killed build are removed by the next build of their target.
    """
    artifacts = session.root / "artifacts"
    owned = {session.root / a.output for a in session.graph.actions}
    owned |= {p.with_name(p.name + MANIFEST_SUFFIX) for p in owned}
    parents = {parent for path in owned for parent in path.parents}
    found: list[Path] = []

    def visit(folder: Path) -> None:
        try:
            children = sorted(folder.iterdir())
        except OSError:
            return
        if not children and folder != artifacts:
            found.append(folder)
        for child in children:
            if child in owned or parse_temp(child.name) is not None:
                continue
            if child in parents and child.is_dir() and not child.is_symlink():
                visit(child)
            else:
                found.append(child)

    visit(artifacts)
    return found
