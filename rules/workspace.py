"""The doit boundary: turns a workspace's targets into doit tasks and configuration."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from doit.exceptions import TaskFailed

from rules import command_line, reporter
from rules.build import STATE_DIR, BuildSession
from rules.core.errors import RulesError
from rules.core.settings import ConfigError
from rules.loading.labels import Label
from rules.loading.patterns import PatternError


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
            try:
                self._session = BuildSession(self.root, verbose=_verbose())
            except ConfigError as err:
                # doit would print its loader's traceback around our message
                # and exit 3; the message is the whole story.
                print(f"rules_keras: {err}", file=sys.stderr)
                raise SystemExit(2) from None
        return self._session

    def doit_config(self) -> dict[str, Any]:
        """DOIT_CONFIG for the dodo.py: threads, a concurrency-safe DB and the summary line."""
        state = self.root / STATE_DIR
        state.mkdir(exist_ok=True)
        dep_file = state / "doit.sqlite"
        _set_aside_if_corrupt(dep_file)
        return {
            "default_tasks": ["export"],
            # Process mode pickles task results and hangs on ones it cannot;
            # exports run in worker processes anyway, so threads only wait.
            "par_type": "thread",
            # doit's default dbm here is dbm.dumb, which loses results when two
            # doit processes run at once. sqlite3 locks; and nothing we decide
            # depends on this DB (manifests are the source of truth).
            "backend": "sqlite3",
            "dep_file": str(dep_file),
            "reporter": reporter.SummaryReporter,
            "verbosity": 2,
        }

    def create_doit_tasks(self) -> Iterator[dict[str, Any]]:
        names: list[str] = []
        takes_rest: list[str] = []
        for task in self._tasks():
            names.append(task["basename"])
            if "pos_arg" in task:
                takes_rest.append(task["basename"])
            yield task
        yield from self._aliases(names, takes_rest)

    def _aliases(self, tasks: list[str], takes_rest: list[str]) -> Iterator[dict[str, Any]]:
        """A group task per pattern or relative label on the command line (rules.command_line)."""
        import doit

        labels = [a.label for a in self.session.graph.actions]
        labels += [Label.parse(f.name) for f in self.session.graph.failures
                   if f.name.startswith("//")]
        cwd = Path(doit.get_initial_workdir() or Path.cwd())
        words = command_line.selected_words(sys.argv[1:])
        try:
            found = command_line.aliases(words, set(tasks), labels, self.root, cwd, takes_rest)
        except PatternError as err:
            # doit would say only "Invalid parameter"; this names the closest targets.
            print(f"rules_keras: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        self.session.selected = command_line.selected_labels(words, found, labels)
        for alias in found:
            deps = [str(label) for label in alias.labels]
            yield {"basename": alias.word, "doc": "the targets " + ", ".join(deps),
                   "actions": None, "task_dep": deps}

    def _tasks(self) -> Iterator[dict[str, Any]]:
        session = self.session
        exports: list[str] = []
        for failure in session.graph.failures:
            exports.append(failure.name)
            yield {
                "basename": failure.name,
                # `doit list` shows the error itself, not a pointer to it.
                "doc": f"cannot be built: {failure.message}",
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
                "uptodate": [UpToDate(session, action.label)],
                "task_dep": [str(dep) for dep in action.deps],
                "clean": [(session.clean, [action.label])],
                # What `doit info` shows; it never shows a Python repr of ours.
                "meta": {"label": name, "kind": action.kind, "output": action.output,
                         "inputs": list(action.inputs)},
                "verbosity": 2,
            }
        yield _command("cache_stats", "Show the local cache's location, entry counts and size",
                       lambda: _commands().cache_stats(self.session))
        yield {
            **_command("cache_gc",
                       "Shrink the local cache to --max-size (default: cache_max_size), oldest "
                       "first", lambda max_size: _commands().cache_gc(self.session, max_size)),
            "params": [{"name": "max_size", "long": "max-size", "default": "",
                        "help": "size to shrink to, e.g. 5G or 500M"}],
        }
        yield _command("cache_check",
                       "Re-hash every entry and blob of the local cache; remove bad ones and "
                       "fail if there were any", lambda: _commands().cache_check(self.session))
        yield _command("server_status",
                       "Show this Python environment's warm export servers, shared by its "
                       "workspaces: pid, idle time, workspaces served, toolchain",
                       lambda: _commands().server_status(self.session))
        yield _command("server_stop",
                       "Stop this Python environment's export servers, which its other "
                       "workspaces share (the next build starts one again)",
                       lambda: _commands().server_stop())
        yield {
            **_command("explain",
                       "Say what `doit export` would do with each target (or LABEL/PATTERN "
                       "...), and why; builds nothing",
                       lambda pos: _commands().explain(self.session, list(pos))),
            "pos_arg": "pos",
        }
        yield _command("clean_orphans",
                       "Remove artifacts that belong to no target, and empty folders",
                       lambda: _commands().clean_orphans(self.session))
        yield {
            "basename": "export",
            "doc": "Build every keras_export target (and the keras_train targets they need)",
            "actions": None,
            "task_dep": exports,
        }

    def _build(self, label: Label) -> TaskFailed | dict[str, str]:
        try:
            outcome = self.session.build(label, forced=_always_execute())
        except RulesError as err:
            return TaskFailed(str(err))
        return {reporter.STATUS: outcome.status, reporter.DETAIL: outcome.detail}


class UpToDate:
    """doit's up-to-date callback for one target; `doit info` prints its repr as the reason."""

    def __init__(self, session: BuildSession, label: Label) -> None:
        self._session = session
        self._label = label
        self._reasons: tuple[str, ...] = ()

    def __call__(self) -> bool:
        up_to_date = self._session.is_up_to_date(self._label)
        self._reasons = self._session.reasons(self._label)
        return up_to_date

    def __repr__(self) -> str:
        return "; ".join(self._reasons) or "the manifest records the current action key"


def _commands() -> ModuleType:
    # The maintenance commands pull in the cache, gc and explain modules; a
    # build that runs none of them should not pay for importing them.
    from rules import commands

    return commands


def _command(name: str, doc: str, action: Any) -> dict[str, Any]:
    return {"basename": name, "doc": doc, "actions": [action], "uptodate": [False],
            "verbosity": 2}


def _always_execute() -> bool:
    """Whether doit was told `-a` / `--always-execute` (it does not tell its tasks)."""
    for arg in sys.argv[1:]:
        if arg == "--always-execute" or (arg.startswith("-") and not arg.startswith("--")
                                         and "a" in arg[1:]):
            return True
    return False


def _verbose() -> bool:
    """Whether doit was told `-v 2` / `--verbosity 2`: our tasks are at 2 already, so doit
    cannot tell us; asked for, it shows each target's details and log."""
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg in ("-v", "--verbosity"):
            value = args[i + 1] if i + 1 < len(args) else ""
        elif arg.startswith("--verbosity="):
            value = arg.partition("=")[2]
        elif arg.startswith("-v") and not arg.startswith("--"):
            value = arg[2:]
        else:
            continue
        if value == "2":
            return True
    return False


def _set_aside_if_corrupt(dep_file: Path) -> None:
    """doit cannot start on a DB that is not SQLite; nothing we decide depends on it, so a
    damaged one is moved aside (and doit starts a new one) instead of failing every build."""
    try:
        with open(dep_file, "rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except OSError:
        return
    if head and head != _SQLITE_HEADER:
        aside = dep_file.with_name(dep_file.name + ".corrupt")
        dep_file.replace(aside)
        print(f"rules_keras: warning: {dep_file} is not an SQLite database; moved it to "
              f"{aside.name} (doit's DB decides nothing here)", file=sys.stderr)


_SQLITE_HEADER = b"SQLite format 3\x00"


def _fail(message: str) -> TaskFailed:
    return TaskFailed(message)
