"""Each target's own log, `.rules_keras/logs/<package>/<name>.log`: its place, header and tail."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from rules.loading.labels import Label

LOGS_DIR = "logs"
# What a failure shows of the log: enough for a traceback and the lines
# before it, little enough that the error headline stays on the screen.
TAIL_LINES = 30


def log_path(state: Path, label: Label) -> Path:
    """`<state>/logs/<package>/<name>.log`; a target of the root package sits in `logs/`."""
    return state / LOGS_DIR / label.package / f"{label.name}.log"


def begin(path: Path, label: Label, reasons: Iterable[str]) -> None:
    """Start this build's log of `label`, replacing the previous build's.

    The job then appends to it (rules.execution.job_output), from a worker,
    the export server's child or a Ray node's replay.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    why = "; ".join(reasons)
    header = f"rules_keras: building {label}" + (f": {why}" if why else "") + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(header, encoding="utf-8")
    # A reader (`tail -f`, or a concurrent build of another clone showing
    # its failure) sees the old log or the new one, never a torn mix.
    tmp.replace(path)


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` lines of the log (decoded leniently: native code writes bytes)."""
    try:
        with open(path, "rb") as handle:
            kept = deque(handle, maxlen=lines)
    except OSError:
        return []
    return [raw.decode("utf-8", "replace").rstrip("\n") for raw in kept]


def read(path: Path) -> str:
    """The whole log, or '' when there is none."""
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def failure_excerpt(path: Path, root: Path) -> str:
    """What a failed target shows of its log: the last lines, then where the whole log is."""
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    # The header is ours and already said on the console; only the job's lines count.
    lines = [line for line in tail(path) if not line.startswith("rules_keras: building ")]
    if not lines:
        return f"(the job printed nothing; log: {shown})"
    return "\n".join([f"last {len(lines)} lines of {shown}:", *(f"  | {x}" for x in lines),
                      f"full log: {shown}"])
