"""Bazel-style labels: `//package/path:name`, parsed relative to a package."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_PACKAGE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*)?")


class LabelError(ValueError):
    """A string is not a valid label."""


@dataclass(frozen=True, order=True)
class Label:
    """A target address: the package is the BUILD.py folder relative to the workspace root."""

    package: str
    name: str

    def __str__(self) -> str:
        return f"//{self.package}:{self.name}"

    @classmethod
    def parse(cls, text: str, current_package: str | None = None) -> Label:
        """Parse `//pkg:name`, `//pkg` (name = last path segment) or `:name`.

        Relative forms need `current_package`. The result always satisfies
        `Label.parse(str(label)) == label`.
        """
        if not isinstance(text, str):
            raise LabelError(f"a label must be a string. Received: {text!r}")
        if text.startswith("//"):
            body = text[2:]
            package, sep, name = body.partition(":")
            if not sep:
                name = package.rsplit("/", 1)[-1]
        elif text.startswith(":"):
            if current_package is None:
                raise LabelError(f"relative label {text!r} used outside a package")
            package, name = current_package, text[1:]
        else:
            raise LabelError(
                f"expected a label like '//package/path:name' or ':name'. Received: {text!r}"
            )
        if not _PACKAGE.fullmatch(package) or package.endswith("/"):
            raise LabelError(f"invalid package path {package!r} in label {text!r}")
        if not _NAME.fullmatch(name):
            raise LabelError(f"invalid target name {name!r} in label {text!r}")
        return cls(package, name)


def is_label(text: str) -> bool:
    """True when `text` is written as a label rather than a file path."""
    return text.startswith(("//", ":"))


def valid_name(name: str) -> bool:
    """True when `name` can be a target name."""
    return bool(_NAME.fullmatch(name))
