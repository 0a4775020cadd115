"""The doit boundary: turns a workspace's targets into doit tasks and configuration."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from rules import reporter
from rules.build import STATE_DIR, BuildSession
from rules.cache.gc import collect
from rules.cache.local import LocalCache
from rules.core.errors import CacheError, RulesError
from rules.core.settings import format_size, parse_size
from rules.execution.server import control as server_control
from rules.loading.labels import Label


class Workspace:
    """Put one in a dodo.py: `workspace = rules.Workspace(Path(__file__).parent)`.

    doit finds it by its `create_doit_tasks` method. Each target becomes a
    task named by its label, so `doit //models/mnist:mnist_serving` builds one
    target, and the `export` task builds them all.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._session: BuildSession | None = None

    @property
    def session(self) -> BuildSession:
        if self._session is None:
            self._session = BuildSession(self.root)
        return self._session

    def doit_config(self) -> dict[str, Any]:
        """DOIT_CONFIG for the dodo.py: threads, a concurrency-safe DB and the summary line."""
        state = self.root / STATE_DIR
        state.mkdir(exist_ok=True)
        return {
            "default_tasks": ["export"],
            # Process mode pickles task results and hangs on ones it cannot;
            # exports run in worker processes anyway, so threads only wait.
            "par_type": "thread",
            # doit's default dbm here is dbm.dumb, which loses results when two
            # doit processes run at once. sqlite3 locks; and nothing we decide
            # depends on this DB (manifests are the source of truth).
            "backend": "sqlite3",
            "dep_file": str(state / "doit.sqlite"),
            "reporter": reporter.SummaryReporter,
            "verbosity": 2,
        }

    def create_doit_tasks(self) -> Iterator[dict[str, Any]]:
        session = self.session
        exports: list[str] = []
        for failure in session.graph.failures:
            exports.append(failure.name)
            yield {
                "basename": failure.name,
                "doc": "cannot be built: see the error",
                "actions": [(_fail, [failure.message])],
                "verbosity": 2,
            }
        for action in session.graph.actions:
            name = str(action.label)
            if action.kind == "keras_export":
                exports.append(name)
            yield {
                "basename": name,
                "doc": action.doc or f"{action.kind} -> {action.output}",
                "actions": [(self._build, [action.label])],
                "uptodate": [(self._uptodate, [action.label])],
                "task_dep": [str(dep) for dep in action.deps],
                "clean": [(self._clean, [action.label])],
                "verbosity": 2,
            }
        yield {
            "basename": "cache_stats",
            "doc": "Show the local cache's location, entry counts and size",
            "actions": [self._cache_stats],
            "uptodate": [False],
            "verbosity": 2,
        }
        yield {
            "basename": "cache_gc",
            "doc": "Shrink the local cache to --max-size (default: cache_max_size), oldest first",
            "actions": [self._cache_gc],
            "params": [
                {
                    "name": "max_size",
                    "long": "max-size",
                    "default": "",
                    "help": "size to shrink to, e.g. 5G or 500M",
                }
            ],
            "uptodate": [False],
            "verbosity": 2,
        }
        yield {
            "basename": "server_status",
            "doc": "Show this workspace's warm export servers: pid, idle time, toolchain",
            "actions": [self._server_status],
            "uptodate": [False],
            "verbosity": 2,
        }
        yield {
            "basename": "server_stop",
            "doc": "Stop this workspace's export servers (the next build starts one again)",
            "actions": [self._server_stop],
            "uptodate": [False],
            "verbosity": 2,
        }
        yield {
            "basename": "export",
            "doc": "Build every keras_export target (and the keras_train targets they need)",
            "actions": None,
            "task_dep": exports,
        }

    def _uptodate(self, label: Label) -> bool:
        return self.session.is_up_to_date(label)

    def _build(self, label: Label) -> TaskFailed | dict[str, str]:
        try:
            outcome = self.session.build(label)
        except RulesError as err:
            return TaskFailed(str(err))
        return {reporter.STATUS: outcome.status}

    def _clean(self, label: Label) -> None:
        self.session.clean(label)

    def _cache_stats(self) -> TaskFailed | None:
        settings = self.session.settings
        if settings.cache_dir is None:
            print("the local cache is off (cache = false or RULES_KERAS_CACHE=0)")
            return None
        try:
            stats = LocalCache(settings.cache_dir).stats()
        except CacheError as err:
            return TaskFailed(f"cannot read the cache: {err}")
        print(f"cache: {settings.cache_dir}")
        print(f"  {stats.ac_entries} action results, {stats.cas_blobs} blobs, "
              f"{format_size(stats.total_bytes)} (limit for cache_gc: "
              f"{format_size(settings.cache_max_size)})")
        if stats.tmp_files:
            print(f"  {stats.tmp_files} unfinished writes (removed by cache_gc after an hour)")
        remote = settings.remote
        print(f"remote: {remote.url if remote else 'none'}"
              + (" (upload)" if remote and remote.upload else " (read-only)" if remote else ""))
        return None

    def _cache_gc(self, max_size: str) -> TaskFailed | None:
        settings = self.session.settings
        if settings.cache_dir is None:
            print("the local cache is off; nothing to collect")
            return None
        try:
            limit = parse_size(max_size) if max_size else settings.cache_max_size
            report = collect(settings.cache_dir, limit)
        except (RulesError, CacheError, ValueError) as err:
            return TaskFailed(f"cache_gc: {err}")
        print(f"removed {report.removed_ac} action results, {report.removed_cas} blobs and "
              f"{report.removed_tmp} stale tmp files, freeing {format_size(report.freed_bytes)}; "
              f"{format_size(report.remaining_bytes)} left (limit {format_size(limit)})")
        return None

    def _server_status(self) -> TaskFailed | None:
        session = self.session
        try:
            lines = server_control.status_lines(
                session.state, session.toolchain.to_json(), session.settings.server
            )
        except RulesError as err:
            return TaskFailed(f"server_status: {err}")
        print("\n".join(lines), file=sys.stdout)
        return None

    def _server_stop(self) -> TaskFailed | None:
        try:
            lines = server_control.stop_lines(self.root / STATE_DIR)
        except RulesError as err:
            return TaskFailed(f"server_stop: {err}")
        print("\n".join(lines), file=sys.stdout)
        return None


def _fail(message: str) -> TaskFailed:
    return TaskFailed(message)
