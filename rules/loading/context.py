"""The package being loaded: where rule functions register their targets."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath

from rules.loading.targets import Target


@dataclass
class PackageContext:
    """Mutable while one BUILD.py executes; frozen into a Package afterwards."""

    package: str
    build_file: Path
    root: Path
    targets: list[Target] = field(default_factory=list)

    @cached_property
    def display_path(self) -> str:
        # Cached: every rule call asks for its call site, four times per target.
        return str(PurePosixPath(self.package) / "BUILD.py") if self.package else "BUILD.py"

    @cached_property
    def _filename(self) -> str:
        return str(self.build_file)

    def call_site(self) -> str:
        """`path:line` of the innermost frame running this BUILD.py."""
        frame = sys._getframe(1)
        target = self._filename
        while frame is not None:
            if frame.f_code.co_filename == target:
                return f"{self.display_path}:{frame.f_lineno}"
            frame = frame.f_back  # type: ignore[assignment]
        return self.display_path


_current: PackageContext | None = None


def current() -> PackageContext:
    """The package being loaded; rule functions are only valid inside a BUILD.py."""
    if _current is None:
        raise RuntimeError(
            "rules_keras rule functions can only be called from a BUILD.py "
            "loaded by rules_keras (run `doit list` or `doit export`)"
        )
    return _current


@contextmanager
def loading(ctx: PackageContext) -> Iterator[PackageContext]:
    global _current
    previous, _current = _current, ctx
    try:
        yield ctx
    finally:
        _current = previous
