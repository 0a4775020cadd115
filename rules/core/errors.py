"""Error types: every message names the BUILD file or target label and the cause."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RulesError(Exception):
    """Base for every error rules_keras reports to the user."""


class BuildFileError(RulesError):
    """A BUILD.py could not be loaded; `where` is `path:line`."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


class ExportError(RulesError):
    """Building a target failed in a worker; carries the user's traceback if any."""

    def __init__(self, label: str, message: str, details: str = "") -> None:
        text = f"{label}: {message}"
        if details:
            text += "\n" + details.rstrip()
        super().__init__(text)
        self.label = label


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest candidates, or ''."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


class CacheError(Exception):
    """Any failure of the cache. Callers log it as a warning and build locally instead."""
