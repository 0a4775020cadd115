"""What a job reads: `open` and `import` audit events, and which of them the action did not declare.

An artifact built from a file its action does not declare never rebuilds when
that file changes. Bazel's sandbox makes such a read fail; this finds it at
the cost of an audit hook (PEP 578) in the process that runs the job. Hooks
cannot be removed, so install() adds one per process and a job switches
recording on and off around itself (begin/end).

Seen: Python-level opens (open(), io.open, os.open, pathlib, numpy.load,
json.load on an open file, zipfile) and imports (statements, __import__, and
importlib.import_module, which raises no audit event and is wrapped instead).
Not seen: reads done in C code (h5py, tf.io.gfile, TensorFlow's file ops),
subprocesses, and memory-mapped or already-open files.

A per-build worker serves many jobs, and a module imported by an earlier job
is not imported again: what it read and imported while being imported would
be missed by later jobs that use it. So those events are remembered per
module file and replayed for every job that uses the module. A server child
is forked fresh for each job and remembers nothing.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import posixpath
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

# Folders below the workspace root whose reads never count, wherever they sit:
# compiled bytecode, installed packages and other tools' trees.
IGNORED_PARTS = frozenset({"__pycache__", "site-packages", "dist-packages", "node_modules"})
# rules_keras's own code, when the workspace is its repository.
_OWN_PACKAGE = str(Path(__file__).resolve().parents[1])


class Event(NamedTuple):
    """An open (absolute path and flags) or an import (module name), and the file of the
    workspace module whose top level was running when it happened ("" for none)."""

    kind: Literal["open", "import"]
    target: str
    flags: int = 0
    owner: str = ""


@dataclass(frozen=True)
class Finding:
    """One undeclared input: a file read, or a workspace module imported dynamically."""

    kind: Literal["read", "import"]
    path: str  # workspace-relative, posix
    module: str = ""


@dataclass(frozen=True)
class Recording:
    """A job's events in order, and what modules read while being imported, by module file."""

    events: tuple[Event, ...]
    by_module: Mapping[str, tuple[Event, ...]] = field(default_factory=dict)


class _State:
    def __init__(self) -> None:
        self.on = False
        self.roots: tuple[str, ...] = ()
        self.events: list[Event] = []
        # Module file -> the events that happened while its top level ran.
        self.by_module: dict[str, list[Event]] = {}
        self.lock = threading.Lock()
        self.installed = False


_state = _State()


def install() -> None:
    """Add the audit hook and wrap importlib.import_module, once per process."""
    if _state.installed:
        return
    _state.installed = True
    sys.addaudithook(_hook)
    original = importlib.import_module

    @functools.wraps(original)
    def import_module(name: str, package: str | None = None) -> Any:
        if _state.on:
            try:
                _record("import", importlib.util.resolve_name(name, package), 0)
            except Exception:
                pass  # a bad name fails in the import itself, with its own message
        return original(name, package)

    importlib.import_module = import_module


def begin(root: str) -> None:
    """Start recording the events of a job that runs in the workspace `root`."""
    install()
    absolute = os.path.normpath(os.path.abspath(root))
    _state.roots = tuple({absolute, os.path.realpath(absolute)})
    with _state.lock:
        _state.events = []
    _state.on = True


def end() -> Recording:
    """Stop recording; the job's events, and what is remembered about imported modules."""
    _state.on = False
    with _state.lock:
        events, _state.events = _state.events, []
        remembered = {path: tuple(found) for path, found in _state.by_module.items()}
    return Recording(tuple(events), remembered)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    # Called for every audit event of the process, recording or not: the
    # first test must stay this cheap. An exception here would fail the
    # user's open() or import, so none may escape.
    if not _state.on:
        return
    try:
        if event == "open":
            _on_open(args)
        elif event == "import":
            _record("import", str(args[0]), 0)
    except Exception:
        pass


def _on_open(args: tuple[Any, ...]) -> None:
    path, _mode, flags = args
    if isinstance(path, int):
        return  # an already-open descriptor
    text = os.fsdecode(path)
    if not os.path.isabs(text):
        text = os.path.join(os.getcwd(), text)
    text = os.path.normpath(text)
    if any(text.startswith(root + os.sep) for root in _state.roots):
        _record("open", text, flags if isinstance(flags, int) else 0)


def _record(kind: Literal["open", "import"], target: str, flags: int) -> None:
    owner = _importing_module()
    event = Event(kind, target, flags, owner or "")
    with _state.lock:
        _state.events.append(event)
        if owner is not None:
            _state.by_module.setdefault(owner, []).append(event)


def _importing_module() -> str | None:
    """The file of the innermost workspace module whose top level is running, if any."""
    frame: Any = sys._getframe(1)
    while frame is not None:
        code: Any = frame.f_code
        if code.co_name == "<module>":
            filename = os.path.normpath(str(code.co_filename))
            if any(filename.startswith(root + os.sep) for root in _state.roots) and not (
                filename.startswith(_OWN_PACKAGE + os.sep)
            ):
                return filename
        frame = frame.f_back
    return None


def is_read(flags: int) -> bool:
    """Whether an open with these flags reads what the file held before."""
    if flags & os.O_ACCMODE == os.O_WRONLY or flags & os.O_TRUNC:
        return False
    return not (flags & os.O_CREAT and flags & os.O_EXCL)


def undeclared(
    recording: Recording,
    *,
    root: str,
    declared: Collection[str],
    ignored: Iterable[str] = (),
    out: str = "",
    module_file: Callable[[str], str | None] | None = None,
) -> list[Finding]:
    """The workspace files the job read, or modules it imported, that are not in `declared`.

    `declared` and `ignored` are workspace-relative; `out` is the job's
    staging path. Reads of files the job itself created first, of folders,
    and of files that no longer exist do not count.
    """
    find_module = module_file or loaded_module_file
    root = os.path.normpath(os.path.abspath(root))
    roots = (root, os.path.realpath(root))
    declared_set = set(declared)
    skip = _Skip(root, tuple(ignored), os.path.normpath(os.path.abspath(out)) if out else "")

    def relative(path: str) -> str | None:
        for base in roots:
            if path.startswith(base + os.sep):
                rel = Path(os.path.relpath(path, base)).as_posix()
                return None if skip(rel, path) else rel
        return None

    events = _with_replay(recording, [os.path.join(root, f) for f in declared_set], find_module)
    imports: dict[str, tuple[Finding, str | None]] = {}
    reads: dict[str, str] = {}
    written: set[str] = set()
    for event in events:
        target = event.target
        if event.kind == "import":
            path = find_module(target)
            rel = relative(path) if path else None
            if rel is not None and rel not in declared_set and rel not in imports:
                owner = relative(event.owner) if event.owner else None
                imports[rel] = (Finding("import", rel, target), owner)
        elif target not in reads and target not in written:
            if is_read(event.flags):
                rel = relative(target)
                if rel is not None:
                    reads[target] = rel
            else:
                written.add(target)
    # What an undeclared module imports while it is imported is part of it:
    # the fix for that module (import it statically) covers those too.
    findings = [found for found, owner in imports.values() if owner not in imports]
    for path, rel in reads.items():
        if rel not in declared_set and rel not in imports and os.path.isfile(path):
            findings.append(Finding("read", rel))
    return sorted(findings, key=lambda f: (f.path, f.kind))


def _with_replay(
    recording: Recording, used: list[str], find_module: Callable[[str], str | None]
) -> list[Event]:
    """The job's events, then what every module it uses did when it was first imported."""
    events = list(recording.events)
    seen_events = set(events)
    pending = list(used)
    pending.extend(
        path for event in recording.events if event.kind == "import"
        for path in [find_module(event.target)] if path
    )
    visited: set[str] = set()
    while pending:
        module = os.path.normpath(pending.pop())
        if module in visited:
            continue
        visited.add(module)
        for event in recording.by_module.get(module, ()):
            if event not in seen_events:
                seen_events.add(event)
                events.append(event)
            if event.kind == "import":
                path = find_module(event.target)
                if path:
                    pending.append(path)
    return events


class _Skip:
    """Which workspace paths never count: ignored folders, venvs, the staging path, our code."""

    def __init__(self, root: str, ignored: tuple[str, ...], out: str) -> None:
        self.root = root
        self.ignored = tuple(i.strip("/") for i in ignored if i.strip("/"))
        self.out = out

    def __call__(self, rel: str, path: str) -> bool:
        if self.out and (path == self.out or path.startswith(self.out + os.sep)):
            return True
        if path.startswith(_OWN_PACKAGE + os.sep):
            return True
        if any(rel == i or rel.startswith(i + "/") for i in self.ignored):
            return True
        parts = rel.split("/")
        if IGNORED_PARTS.intersection(parts[:-1]):
            return True
        return any(_is_env(self.root, "/".join(parts[:i])) for i in range(1, len(parts)))


@functools.lru_cache(maxsize=1024)
def _is_env(root: str, rel_dir: str) -> bool:
    """A virtualenv or conda environment: not the workspace's own files."""
    folder = os.path.join(root, rel_dir)
    return os.path.isfile(os.path.join(folder, "pyvenv.cfg")) or os.path.isdir(
        os.path.join(folder, "conda-meta")
    )


def loaded_module_file(name: str) -> str | None:
    """The source file of an imported module, if it has one."""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return os.path.normpath(os.path.abspath(path)) if isinstance(path, str) else None


def describe(findings: list[Finding], owner: str) -> list[str]:
    """One line per finding naming the file and the fix; the caller adds the target's label."""
    package = owner[2:].partition(":")[0]
    lines = []
    for finding in findings:
        fix = posixpath.relpath(finding.path, package or ".")
        if finding.kind == "import":
            lines.append(
                f"imports the workspace module {finding.module} ({finding.path}) "
                f"dynamically, so a change to it would not rebuild the target: list '{fix}' "
                f"in data of {owner}, or import it statically"
            )
        else:
            lines.append(
                f"reads {finding.path}, which it does not declare, so a change to it "
                f"would not rebuild the target: add '{fix}' to data of {owner}"
            )
    return lines
