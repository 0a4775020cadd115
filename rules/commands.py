"""The maintenance commands: cache_stats, cache_gc, cache_check, server_status, server_stop,
explain, clean_orphans. Each prints its answer and returns a doit TaskFailed, or None."""

from __future__ import annotations

import sys
from pathlib import Path

import doit
from doit.exceptions import TaskFailed

from rules import explain as explaining
from rules.build import BuildSession
from rules.cache import fsck
from rules.cache.gc import collect
from rules.cache.local import LocalCache
from rules.core.errors import CacheError, RulesError
from rules.core.fsio import discard
from rules.core.settings import format_size, parse_size
from rules.execution.server import control as server_control
from rules.loading.patterns import current_package, expand


def _say(*lines: str) -> None:
    # file=sys.stdout, not print's default: doit swaps sys.stdout per action
    # under -n, and CPython 3.11's print() only borrows its reference.
    print("\n".join(lines), file=sys.stdout, flush=True)


def cache_stats(session: BuildSession) -> TaskFailed | None:
    """`doit cache_stats`: where the local cache is, how big, and which remote."""
    settings = session.settings
    if settings.cache_dir is None:
        _say("the local cache is off (cache = false or RULES_KERAS_CACHE=0)")
        return None
    try:
        stats = LocalCache(settings.cache_dir).stats()
    except CacheError as err:
        return TaskFailed(f"cannot read the cache: {err}")
    _say(f"cache: {settings.cache_dir}")
    _say(f"  {stats.ac_entries} action results, {stats.cas_blobs} blobs, "
          f"{format_size(stats.total_bytes)} (limit for cache_gc: "
          f"{format_size(settings.cache_max_size)})")
    if stats.tmp_files:
        _say(f"  {stats.tmp_files} unfinished writes (removed by cache_gc after an hour)")
    remote = settings.remote
    _say(f"remote: {remote.url if remote else 'none'}"
          + (" (upload)" if remote and remote.upload else " (read-only)" if remote else ""))
    return None

def cache_gc(session: BuildSession, max_size: str) -> TaskFailed | None:
    """`doit cache_gc`: shrink the local cache, oldest entries first."""
    settings = session.settings
    if settings.cache_dir is None:
        _say("the local cache is off; nothing to collect")
        return None
    try:
        limit = parse_size(max_size) if max_size else settings.cache_max_size
        report = collect(settings.cache_dir, limit)
    except (RulesError, CacheError, ValueError) as err:
        return TaskFailed(f"cache_gc: {err}")
    _say(f"removed {report.removed_ac} action results, {report.removed_cas} blobs and "
          f"{report.removed_tmp} stale tmp files, freeing {format_size(report.freed_bytes)}; "
          f"{format_size(report.remaining_bytes)} left (limit {format_size(limit)})")
    return None

def cache_check(session: BuildSession) -> TaskFailed | None:
    """`doit cache_check`: re-hash every entry and blob of the local cache, evict bad ones."""
    root = session.settings.cache_dir
    if root is None:
        _say("the local cache is off; nothing to check")
        return None
    _say(f"checking {root}")
    try:
        report = fsck.check(root, lambda finding: _say(f"  {finding.line()}"))
    except CacheError as err:
        return TaskFailed(f"cache_check: {err}")
    _say(f"checked {report.entries} action results and {report.blobs} blobs: "
         f"{len(report.bad)} bad" + (", removed" if report.bad else ""))
    if report.bad:
        return TaskFailed(f"cache_check: {len(report.bad)} corrupt files in {root} were removed; "
                          "the builds that need them will rebuild them. If this recurs, check "
                          "the disk.")
    return None


def server_status(session: BuildSession) -> TaskFailed | None:
    """`doit server_status`: this environment's warm export servers."""
    try:
        lines = server_control.status_lines(
            session.root, session.toolchain.to_json(), session.settings.server
        )
    except RulesError as err:
        return TaskFailed(f"server_status: {err}")
    _say(*lines)
    return None

def server_stop() -> TaskFailed | None:
    """`doit server_stop`: stop them, for every workspace that shares them."""
    try:
        lines = server_control.stop_lines()
    except RulesError as err:
        return TaskFailed(f"server_stop: {err}")
    _say(*lines)
    return None




def explain(session: BuildSession, patterns: list[str]) -> TaskFailed | None:
    """`doit explain [LABEL|PATTERN ...]`: what a build would do with each target, and why."""
    # doit moved to the dodo.py folder; relative labels mean the user's folder.
    cwd = Path(doit.get_initial_workdir() or Path.cwd())
    try:
        known = [*session.actions, *(f.label for f in session.graph.failures if f.label)]
        labels = None if not patterns else expand(
            patterns, known, current_package(session.root, cwd)
        )
    except RulesError as err:
        return TaskFailed(str(err))
    found = explaining.verdicts(session, labels)
    for verdict in found:
        _say(*verdict.lines())
    counts = {state: sum(v.state == state for v in found) for state in
              ("up to date", "would restore", "would build", "cannot be built")}
    _say(", ".join(f"{n} {state}" for state, n in counts.items()))
    stray = explaining.orphans(session) if not patterns else []
    if stray:
        _say(f"{len(stray)} paths under artifacts/ belong to no target "
             "(`doit clean_orphans` removes them):",
             *(f"  {p.relative_to(session.root)}" for p in stray))
    return None


def clean_orphans(session: BuildSession) -> TaskFailed | None:
    """`doit clean_orphans`: remove what explain lists as belonging to no target."""
    stray = explaining.orphans(session)
    for path in stray:
        discard(path)
        _say(f"removed {path.relative_to(session.root)}")
    if not stray:
        _say("nothing under artifacts/ is an orphan")
    return None
