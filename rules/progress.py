"""A build's progress: one line per finished target, what is running, and the slowest targets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

# How many of the slowest targets the line after the summary names.
SLOWEST = 3
# What happened to a finished target, as its line says it. "skipped": a
# dependency failed (doit --continue), so it was never run.
Finish = Literal["built", "restored", "up to date", "failed", "skipped"]


@dataclass(frozen=True)
class Finished:
    """One target's end: `[n/total] <how> <label> <detail> (<seconds> s)`."""

    index: int
    total: int
    how: Finish
    label: str
    detail: str = ""
    seconds: float | None = None

    def line(self) -> str:
        width = len(str(self.total))
        parts = [f"[{self.index:>{width}}/{self.total}]", self.how, self.label]
        detail, seconds = self.detail, None
        if self.seconds is not None:
            seconds = f"{self.seconds:.2f} s"
            if detail.startswith("(") and detail.endswith(")"):  # "(forced, 1.20 s)"
                detail, seconds = "", f"{detail[1:-1]}, {seconds}"
        parts += [detail] if detail else []
        parts += [f"({seconds})"] if seconds else []
        return " ".join(parts)


class Progress:
    """Counts targets as they finish; thread-safe (doit -n N reports from several threads)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._done = 0
        self._started: dict[str, float] = {}
        self._seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self, label: str) -> None:
        with self._lock:
            self._started[label] = time.monotonic()

    def finish(self, label: str, how: Finish, detail: str = "") -> Finished:
        """The target's line; its time counts from start() (none for an up-to-date target)."""
        with self._lock:
            started = self._started.pop(label, None)
            seconds = None if started is None else time.monotonic() - started
            if seconds is not None:
                self._seconds[label] = seconds
            self._done += 1
            # A target doit found on the way that the plan did not count (it
            # never happens with `doit export`): grow the total, not overflow.
            self.total = max(self.total, self._done)
            return Finished(self._done, self.total, how, label, detail, seconds)

    def running(self) -> list[tuple[str, float]]:
        """What runs now and for how long, longest first."""
        now = time.monotonic()
        with self._lock:
            found = [(label, now - started) for label, started in self._started.items()]
        return sorted(found, key=lambda item: -item[1])

    def status_line(self) -> str:
        """The live line a terminal shows below the finished ones."""
        running = self.running()
        shown = ", ".join(f"{label} {seconds:.0f} s" for label, seconds in running[:SLOWEST])
        more = f" and {len(running) - SLOWEST} more" if len(running) > SLOWEST else ""
        with self._lock:
            done = self._done
        return f"[{done}/{self.total}] running {shown}{more}" if running else ""

    def not_attempted(self) -> int:
        with self._lock:
            return max(0, self.total - self._done)

    def slowest(self, n: int = SLOWEST) -> list[tuple[str, float]]:
        with self._lock:
            ranked = sorted(self._seconds.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:n]

    def closing_line(self, failed: bool) -> str:
        """The line after the summary: the slowest targets, and what a failure left unbuilt."""
        parts = []
        slow = self.slowest()
        if slow:
            parts.append("slowest: " + ", ".join(f"{label} ({s:.2f} s)" for label, s in slow))
        left = self.not_attempted()
        if left:
            # Without --continue doit stops at the first failure; with it, a
            # target whose dependency failed is reported (skipped), not left.
            hint = "; `doit --continue` builds them" if failed else ""
            parts.append(f"{left} not attempted{hint}")
        return "; ".join(parts)


def planned(tasks: Mapping[str, object], selected: Iterable[str]) -> list[str]:
    """The names of every task `selected` reaches through task_dep, each once."""
    seen: dict[str, None] = {}
    stack = list(selected)
    while stack:
        name = stack.pop()
        if name in seen or name not in tasks:
            continue
        seen[name] = None
        stack.extend(getattr(tasks[name], "task_dep", ()))
    return list(seen)
