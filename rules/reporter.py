"""doit reporter that ends `doit export` with one line: built, restored, up to date, failed."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from doit.reporter import ConsoleReporter

# The key of the value a target's action returns to doit: its status.
STATUS = "rules_keras_status"
# The summary line's words, in order. CI scripts and our tests parse this line:
# change it only with parse_summary below.
COUNTED = ("built", "restored", "up to date", "failed")
_SUMMARY = re.compile(r"^(\d+) built, (\d+) restored, (\d+) up to date, (\d+) failed$", re.M)


def summary_line(counts: Counter[str]) -> str:
    """`B built, R restored, U up to date, F failed`."""
    return ", ".join(f"{counts[word]} {word}" for word in COUNTED)


def parse_summary(text: str) -> dict[str, int] | None:
    """The counts of the last summary line in `text` (a build's stdout), or None."""
    found = _SUMMARY.findall(text)
    return dict(zip(COUNTED, (int(n) for n in found[-1]), strict=True)) if found else None


def _is_target(task: Any) -> bool:
    # Targets are named by label (//pkg:name) or by a BUILD.py that failed to load.
    name: str = task.name
    return name.startswith("//") or name.endswith("BUILD.py")


class SummaryReporter(ConsoleReporter):  # type: ignore[misc]
    """ConsoleReporter plus the counts line."""

    def __init__(self, outstream: Any, options: Any) -> None:
        super().__init__(outstream, options)
        self._counts: Counter[str] = Counter()
        self._builds_targets = False

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        super().initialize(tasks, selected_tasks)
        # Maintenance tasks (cache_stats, cache_gc) get no counts line.
        self._builds_targets = any(
            name == "export" or name.startswith("//") or name.endswith("BUILD.py")
            for name in selected_tasks or ()
        )

    def skip_uptodate(self, task: Any) -> None:
        super().skip_uptodate(task)
        if _is_target(task):
            self._counts["up to date"] += 1

    def add_success(self, task: Any) -> None:
        super().add_success(task)
        if _is_target(task):
            # The action's return value; doit keeps it in task.values.
            self._counts[task.values.get(STATUS, "built")] += 1

    def add_failure(self, task: Any, fail: Any) -> None:
        super().add_failure(task, fail)
        if _is_target(task):
            self._counts["failed"] += 1

    def complete_run(self) -> None:
        super().complete_run()
        if not self._builds_targets:
            return
        self.outstream.write(summary_line(self._counts) + "\n")
