"""The model-code closure: first-party modules reachable by import, found by parsing."""

from __future__ import annotations

import ast
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from rules.core.digests import DigestCache
from rules.core.fsio import read_json, write_json

_STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}


@dataclass(frozen=True)
class Closure:
    """First-party files (workspace-relative path -> sha256) and third-party top-level names."""

    files: tuple[tuple[str, str], ...]
    third_party: tuple[str, ...]


class ImportScanner:
    """Resolves modules under a workspace root and parses their imports, with a cache.

    Parsed import lists are cached by file sha256, so an unchanged file is
    never parsed twice, in this process or the next.
    """

    def __init__(self, root: Path, digests: DigestCache, cache_path: Path) -> None:
        self._root = root
        self._digests = digests
        self._cache_path = cache_path
        raw = read_json(cache_path)
        self._parsed: dict[str, list[list[object]]] = {
            digest: entries
            for digest, entries in (raw.items() if isinstance(raw, dict) else ())
            if _valid_entries(entries)
        }
        self._dirty = False
        self._lock = threading.Lock()
        # Top-level names that are not in the workspace (keras, numpy, os...),
        # decided once per process: a 100-target no-op otherwise spends
        # thousands of stat calls asking again for every import of every target.
        self._foreign: set[str] = set()

    def module_file(self, module: str) -> Path | None:
        """The file that `import module` would run from the workspace, if it is first-party."""
        base = self._root.joinpath(*module.split("."))
        # A package wins over a same-named module, as in Python's own finder.
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None

    def closure(self, modules: list[str]) -> Closure:
        """Every first-party module the given modules import, transitively, plus parents."""
        files: dict[str, str] = {}
        third: set[str] = set()
        pending = list(modules)
        seen: set[str] = set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
            parts = name.split(".")
            top = parts[0]
            if top in self._foreign:
                if top not in _STDLIB:
                    third.add(top)
                continue
            pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))
            path = self.module_file(name)
            if path is None:
                first_party = self.module_file(top) is not None or (self._root / top).is_dir()
                if not first_party:
                    with self._lock:
                        self._foreign.add(top)
                    if top not in _STDLIB:
                        third.add(top)
                continue
            rel = path.relative_to(self._root).as_posix()
            digest = self._digests.digest(path)
            files[rel] = digest
            is_package = path.name == "__init__.py"
            for imported in self._imports(path, digest):
                pending.extend(_resolve(imported, name, is_package))
        return Closure(tuple(sorted(files.items())), tuple(sorted(third)))

    def _imports(self, path: Path, digest: str) -> list[list[object]]:
        with self._lock:
            cached = self._parsed.get(digest)
        if cached is not None:
            return cached
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError):
            # Its digest is still in the key; the worker's import reports the
            # error against the target, with the user's file and line.
            return []
        found: list[list[object]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.extend([alias.name, 0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                found.append([node.module or "", node.level, *(a.name for a in node.names)])
        with self._lock:
            self._parsed[digest] = found
            self._dirty = True
        return found

    def save(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            parsed = dict(self._parsed)
            self._dirty = False
        try:
            write_json(self._cache_path, parsed, durable=False)
        except OSError:
            pass  # only costs re-parsing next time


def _valid_entries(entries: object) -> bool:
    """A cached import list written by another version may have another shape: skip it."""
    return isinstance(entries, list) and all(
        isinstance(e, list)
        and len(e) >= 2
        and isinstance(e[0], str)
        and isinstance(e[1], int)
        and all(isinstance(n, str) for n in e[2:])
        for e in entries
    )


def _resolve(entry: list[object], importer: str, importer_is_package: bool) -> list[str]:
    """Absolute module names an import statement may load."""
    module, level, *names = entry
    assert isinstance(module, str) and isinstance(level, int)
    if level:
        base = importer.split(".") if importer_is_package else importer.split(".")[:-1]
        if level > 1:
            base = base[: len(base) - (level - 1)]
        module = ".".join([*base, module] if module else base)
    if not names:
        return [module] if module else []
    # `from pkg import x` may import the submodule pkg.x; a candidate that is not
    # a module simply fails to resolve to a file.
    return [module, *(f"{module}.{n}" if module else str(n) for n in names if n != "*")]
