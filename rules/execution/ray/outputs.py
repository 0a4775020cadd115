"""A node's outputs on the client: every file re-hashed as it is written, and what the job printed.

Nothing a node returns is trusted: a file whose bytes do not hash to the
digest the node sent, or whose path would leave the staging folder, fails
the whole artifact, which is then built locally.
"""

from __future__ import annotations

import os
from pathlib import Path

from rules.core.files import check_relpath
from rules.core.fsio import verified, write_atomic
from rules.execution.ray.wire import NodeReport


def unpack(report: NodeReport, staged: Path) -> None:
    """Write the node's output files at `staged`, re-hashing each.

    Raises ValueError (DigestMismatch) for a file whose bytes do not hash to
    its digest, CacheError (InvalidEntry) for an unsafe path.
    """
    if report.artifact_kind == "file":
        if len(report.files) != 1:
            raise ValueError(f"a file artifact came back as {len(report.files)} files")
        only = report.files[0]
        write_atomic(staged, verified([only.data], only.sha256, len(only.data), only.path),
                     durable=False, mode=only.mode)
        return
    staged.mkdir(parents=True, exist_ok=False)
    for folder in report.dirs:
        (staged / check_relpath(folder)).mkdir(parents=True, exist_ok=True)
    for entry in report.files:
        dest = staged / check_relpath(entry.path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, verified([entry.data], entry.sha256, len(entry.data), entry.path),
                     durable=False, mode=entry.mode)


def replay(report: NodeReport, log: str = "") -> None:
    """Put what the job printed on the node where a local job's output would go: its log."""
    if log:
        with open(log, "ab") as handle:
            handle.write(report.stdout + report.stderr)
        return
    for fd, data in ((1, report.stdout), (2, report.stderr)):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
