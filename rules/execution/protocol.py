"""Messages between the build process and a worker: one JSON object per line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Job:
    """One unit of work for a worker of `backend`.

    `out` is the staging path the worker writes; the caller publishes it.
    `options` holds the rule-specific settings, already JSON.
    """

    label: str
    kind: str
    backend: str
    factory: str
    weights: str | None
    out: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_line(self) -> bytes:
        body = {
            "label": self.label,
            "kind": self.kind,
            "backend": self.backend,
            "factory": self.factory,
            "weights": self.weights,
            "out": self.out,
            "options": dict(self.options),
        }
        return (json.dumps(body) + "\n").encode("utf-8")

    @classmethod
    def from_line(cls, line: bytes) -> Job:
        return cls(**json.loads(line))


@dataclass(frozen=True)
class JobResult:
    """What a worker reports: a record for the manifest, or an error with the user's traceback."""

    ok: bool
    record: Mapping[str, Any] = field(default_factory=dict)
    error_kind: str = ""
    message: str = ""
    details: str = ""

    def to_line(self) -> bytes:
        body = {
            "ok": self.ok,
            "record": dict(self.record),
            "error_kind": self.error_kind,
            "message": self.message,
            "details": self.details,
        }
        return (json.dumps(body) + "\n").encode("utf-8")

    @classmethod
    def from_line(cls, line: bytes) -> JobResult:
        return cls(**json.loads(line))

    @classmethod
    def failure(cls, kind: str, message: str, details: str = "") -> JobResult:
        return cls(False, {}, kind, message, details)
