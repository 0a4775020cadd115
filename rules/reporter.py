"""doit reporter: a line per finished target, then `B built, R restored, U up to date, F failed`."""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

from doit.exceptions import UnmetDependency
from doit.reporter import ConsoleReporter

from rules.progress import Finish, Progress, planned

# The keys of the value a target's action returns to doit: its status, and
# what its line says after the label ("from the local cache").
STATUS = "rules_keras_status"
DETAIL = "rules_keras_detail"
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
    # Targets are named by label (//pkg:name) or by a BUILD.py that failed to load;
    # a pattern typed on the command line (//pkg/...) is a group task, with no actions.
    name: str = task.name
    return bool(task.actions) and (name.startswith("//") or name.endswith("BUILD.py"))


class SummaryReporter(ConsoleReporter):  # type: ignore[misc]
    """One line per finished target, the counts line, and a line naming the slowest.

    Only the reporter writes these (doit calls it from the thread that runs
    the task under `doit -n N`, hence the lock). A target's own output is in
    its log (rules.job_logs); a failure shows the log's tail here.
    """

    def __init__(self, outstream: Any, options: Any) -> None:
        super().__init__(outstream, options)
        self._counts: Counter[str] = Counter()
        self._builds_targets = False
        self._progress = Progress(0)
        self._failed = False
        self._lock = threading.RLock()
        self._live = _LiveLine(outstream, self._progress, self._lock)

    def write(self, text: str) -> None:
        with self._lock:
            self._live.clear()
            self.outstream.write(text)
            self.outstream.flush()

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        super().initialize(tasks, selected_tasks)
        reached = planned(tasks, selected_tasks or ())
        self._progress.total = sum(_is_target(tasks[name]) for name in reached)
        # Maintenance tasks (cache_stats, cache_gc) get no counts line.
        self._builds_targets = self._progress.total > 0 or "export" in (selected_tasks or ())
        if self._builds_targets:
            self._live.begin()

    def execute_task(self, task: Any) -> None:
        if not _is_target(task):
            super().execute_task(task)
            return
        self._progress.start(task.name)

    def skip_uptodate(self, task: Any) -> None:
        if not _is_target(task):
            super().skip_uptodate(task)
            return
        self._counts["up to date"] += 1
        self._finish(task, "up to date")

    def add_success(self, task: Any) -> None:
        super().add_success(task)
        if _is_target(task):
            # The action's return value; doit keeps it in task.values.
            status = task.values.get(STATUS, "built")
            self._counts[status] += 1
            self._finish(task, status, str(task.values.get(DETAIL) or ""))

    def add_failure(self, task: Any, fail: Any) -> None:
        if not _is_target(task):
            # `export` only groups the targets, whose lines already said
            # which failed; doit would add a block naming one of them.
            if not (task.actions == [] and isinstance(fail, UnmetDependency)):
                super().add_failure(task, fail)
            return
        self._counts["failed"] += 1
        self._failed = True
        if isinstance(fail, UnmetDependency):
            self._finish(task, "skipped", "(a dependency failed)")
            return
        self.failures.append({"task": task, "exception": fail})
        with self._lock:
            self._finish(task, "failed")
            self.write(_indented(fail.get_msg()))

    def _finish(self, task: Any, how: Finish, detail: str = "") -> None:
        self.write(self._progress.finish(task.name, how, detail).line() + "\n")

    def complete_run(self) -> None:
        self._live.end()
        super().complete_run()
        if not self._builds_targets:
            return
        self.write(summary_line(self._counts) + "\n")
        closing = self._progress.closing_line(self._failed)
        if closing:
            self.write(closing + "\n")


def _indented(message: str) -> str:
    """A failure's message under its target's line: the headline, traceback and log tail."""
    return "".join(f"    {line}\n" if line else "\n" for line in message.rstrip().split("\n"))


class _LiveLine:
    """On a terminal, a status line under the finished ones: what runs now, for how long.

    Off a terminal (CI, a pipe, our tests) it writes nothing: plain lines only.
    """

    REFRESH = 0.5

    def __init__(self, outstream: Any, progress: Progress, lock: threading.RLock) -> None:
        self._out = outstream
        self._progress = progress
        isatty = getattr(outstream, "isatty", None)
        self._tty = bool(isatty and isatty())
        self._shown = False
        self._text = ""
        self._stop = threading.Event()
        # The reporter's: a target's line and the status line never interleave.
        self._lock = lock

    def begin(self) -> None:
        if self._tty:
            threading.Thread(target=self._tick, name="rules_keras-status", daemon=True).start()

    def _tick(self) -> None:
        while not self._stop.wait(self.REFRESH):
            line = self._progress.status_line()
            with self._lock:
                if self._stop.is_set():
                    return
                if line != self._text or not self._shown:
                    self._out.write("\r\x1b[K" + line)
                    self._out.flush()
                    self._shown, self._text = bool(line), line

    def clear(self) -> None:
        with self._lock:
            if self._shown:
                self._out.write("\r\x1b[K")
                self._shown = False

    def end(self) -> None:
        self._stop.set()
        self.clear()
