"""Messages between the build and whatever runs a job: one JSON object per line.

A request carries the typed job (rules.core.job) in its wire form, the
staging path to write and, for the audit of what the job reads, its declared
inputs; the receiving process parses it once, on the first line that reads
it. A ping asks a fresh worker to answer once its imports are done.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.core.job import DeclaredInputs, Job, job_from_wire


@dataclass(frozen=True)
class JobRequest:
    """Run `job`, writing its artifact at `out` (a staging path the caller publishes).

    With `declared`, the job's reads are audited (rules.execution.audit);
    without (the server's warm-up), they are not. With `log` (an absolute
    path the caller has created), everything the job prints goes there
    (rules.execution.job_output); without, to the process's own output.
    """

    job: Job
    out: str
    declared: DeclaredInputs | None = None
    log: str = ""

    def to_wire(self) -> dict[str, Any]:
        declared = None if self.declared is None else self.declared.to_wire()
        return {"op": "run", "job": self.job.to_wire(), "out": self.out, "declared": declared,
                "log": self.log}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> JobRequest:
        declared = data.get("declared")
        return cls(
            job_from_wire(data["job"]),
            str(data["out"]),
            None if declared is None else DeclaredInputs.from_wire(declared),
            str(data.get("log") or ""),
        )


PING: dict[str, Any] = {"op": "ping"}


@dataclass(frozen=True)
class JobResult:
    """What a worker reports: a record for the manifest, or an error with the user's traceback."""

    ok: bool
    record: Mapping[str, Any] = field(default_factory=dict)
    error_kind: str = ""
    message: str = ""
    details: str = ""
    # [path, stat stamp, sha256] of each artifact file, hashed while the job
    # verified it (rules.execution.output_digests); not part of the record.
    hashed: tuple[Any, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "record": dict(self.record),
            "error_kind": self.error_kind,
            "message": self.message,
            "details": self.details,
            "hashed": list(self.hashed),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> JobResult:
        hashed = data.get("hashed")
        return cls(
            ok=bool(data["ok"]),
            record=dict(data.get("record") or {}),
            error_kind=str(data.get("error_kind", "")),
            message=str(data.get("message", "")),
            details=str(data.get("details", "")),
            hashed=tuple(hashed) if isinstance(hashed, list) else (),
        )

    @classmethod
    def failure(cls, kind: str, message: str, details: str = "") -> JobResult:
        return cls(False, {}, kind, message, details)

    @classmethod
    def exited(cls) -> JobResult:
        """A job process that ended with exit code 0 and no result: user code exited it."""
        return cls.failure(
            "JobExited",
            "the model code ended the process (os._exit or sys.exit in a thread) before the "
            "export finished; a factory, train or endpoint function must return, not exit",
        )

    @property
    def warnings(self) -> list[str]:
        """What the build prints after the target's outcome, one line each; each names the label."""
        return [str(w) for w in self.record.get("warnings", ())]


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as a line of JSON."""
    return (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")


def decode(line: bytes) -> dict[str, Any]:
    """The message on one line; ValueError if it is not a JSON object."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object. Received: {type(message).__name__}")
    return message
