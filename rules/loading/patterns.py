"""Target patterns as Bazel users type them: //pkg:name, //pkg/..., //pkg:all, :name, name.

Relative forms resolve against the package of the current directory, so
`doit :serve` in models/mnist/ means //models/mnist:serve.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path

from rules.core.errors import RulesError, did_you_mean
from rules.loading.labels import Label, LabelError


class PatternError(RulesError):
    """A pattern names no target; the message suggests the closest ones."""


def current_package(root: Path, cwd: Path) -> str | None:
    """The package of `cwd` (its path under the workspace root), or None outside the root."""
    try:
        rel = cwd.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
    return "" if rel == "." else rel


def is_pattern(text: str) -> bool:
    """Whether a command-line word is written as a target pattern rather than a task name."""
    return text.startswith(("//", ":")) or text in ("...", "all") or text.endswith("/...") \
        or ":" in text


def expand(patterns: Sequence[str], labels: Iterable[Label], package: str | None) -> list[Label]:
    """The labels the patterns name, in order, each once; PatternError for one that names none."""
    known = sorted(set(labels))
    chosen: list[Label] = []
    for pattern in patterns:
        found = _match(pattern, known, package)
        if not found:
            raise PatternError(_no_match(pattern, known, package))
        chosen.extend(label for label in found if label not in chosen)
    return chosen


def _absolute(pattern: str, package: str | None) -> str:
    if pattern.startswith("//"):
        return pattern
    if package is None:
        raise PatternError(
            f"{pattern!r} is relative, but the current folder is outside the workspace; "
            "write it as //package:name"
        )
    if pattern.startswith(":"):
        return f"//{package}{pattern}"
    prefix = f"{package}/" if package else ""
    if ":" in pattern or pattern.endswith("..."):
        return f"//{prefix}{pattern}"
    return f"//{package}:{pattern}"


def _match(pattern: str, known: list[Label], package: str | None) -> list[Label]:
    text = _absolute(pattern, package)
    body = text[2:]
    if body == "..." or body.endswith("/..."):
        base = body[: -len("...")].rstrip("/")
        return [lbl for lbl in known if base == "" or lbl.package == base
                or lbl.package.startswith(base + "/")]
    pkg, sep, name = body.partition(":")
    if sep and name in ("all", "*"):
        return [lbl for lbl in known if lbl.package == pkg]
    try:
        label = Label.parse(text)
    except LabelError as err:
        raise PatternError(str(err)) from None
    return [label] if label in known else []


def _no_match(pattern: str, known: list[Label], package: str | None) -> str:
    try:
        text = _absolute(pattern, package)
    except PatternError as err:
        return str(err)
    hint = did_you_mean(text, [str(lbl) for lbl in known])
    if not hint and ":" in text:
        # A right name in the wrong package: suggest the targets with close names.
        name = text.rpartition(":")[2]
        close = set(difflib.get_close_matches(name, sorted({lbl.name for lbl in known}), n=3))
        matches = [repr(str(lbl)) for lbl in known if lbl.name in close][:3]
        if matches:
            hint = " Did you mean " + " or ".join(matches) + "?"
    return f"no target matches {pattern!r}" + (f" ({text})" if text != pattern else "") + "." + hint
