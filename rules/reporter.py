"""doit reporter that ends `doit export` with one line: built, restored, up to date, failed."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from doit.reporter import ConsoleReporter

_outcomes: dict[str, str] = {}
_lock = threading.Lock()
_on_complete: list[Any] = []


def record(task_name: str, status: str) -> None:
    """Called by a task action: 'built' or 'restored' for the summary."""
    with _lock:
        _outcomes[task_name] = status


def on_complete(callback: Any) -> None:
    """Run `callback()` when doit finishes (flush caches, stop workers)."""
    _on_complete.append(callback)


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
            with _lock:
                status = _outcomes.get(task.name, "built")
            self._counts[status] += 1

    def add_failure(self, task: Any, fail: Any) -> None:
        super().add_failure(task, fail)
        if _is_target(task):
            self._counts["failed"] += 1

    def complete_run(self) -> None:
        for callback in _on_complete:
            callback()
        super().complete_run()
        if not self._builds_targets:
            return
        c = self._counts
        self.outstream.write(
            f"{c['built']} built, {c['restored']} restored, {c['up to date']} up to date, "
            f"{c['failed']} failed\n"
        )
