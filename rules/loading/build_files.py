"""Find and execute BUILD.py files; each becomes a Package of targets or a load error."""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rules.core.errors import BuildFileError
from rules.loading.code_cache import CodeCache
from rules.loading.context import PackageContext, loading
from rules.loading.targets import Target

BUILD_FILE = "BUILD.py"
# Folders that never hold packages: build output, state, caches and virtualenvs.
SKIP_DIRS = frozenset({"artifacts", "__pycache__", "node_modules", "site-packages"})


@dataclass(frozen=True)
class Package:
    """The result of loading one BUILD.py: its targets, or the error that stopped it."""

    name: str
    build_file: Path
    targets: tuple[Target, ...]
    error: BuildFileError | None = None

    @property
    def display_path(self) -> str:
        return str(PurePosixPath(self.name) / BUILD_FILE) if self.name else BUILD_FILE


def find_build_files(root: Path) -> list[Path]:
    """Every BUILD.py under `root`, sorted, skipping hidden folders, artifacts/ and venvs."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in SKIP_DIRS
            and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))
        )
        if BUILD_FILE in filenames:
            found.append(Path(dirpath) / BUILD_FILE)
    return found


def package_name(root: Path, build_file: Path) -> str:
    rel = build_file.parent.relative_to(root).as_posix()
    return "" if rel == "." else rel


def load_package(root: Path, build_file: Path, code_cache: CodeCache | None = None) -> Package:
    """Execute one BUILD.py. Errors are returned, never raised, so other packages still load."""
    name = package_name(root, build_file)
    ctx = PackageContext(name, build_file, root)
    try:
        code = (code_cache or CodeCache(None)).compile(build_file)
    except SyntaxError as err:
        where = f"{ctx.display_path}:{err.lineno or 0}"
        return Package(name, build_file, (), BuildFileError(where, f"syntax error: {err.msg}"))
    except (OSError, ValueError) as err:  # ValueError: not UTF-8, or a NUL byte
        return Package(name, build_file, (), BuildFileError(ctx.display_path, str(err)))
    namespace = {"__file__": str(build_file), "__name__": f"BUILD:{name}"}
    with loading(ctx):
        try:
            exec(code, namespace)
        except Exception as err:
            line = 0
            for frame in traceback.extract_tb(err.__traceback__):
                if frame.filename == str(build_file):
                    line = frame.lineno or 0
            message = f"{type(err).__name__}: {err}"
            return Package(
                name, build_file, (), BuildFileError(f"{ctx.display_path}:{line}", message)
            )
    return Package(name, build_file, tuple(ctx.targets))


def load_workspace(root: Path, code_cache: Path | None = None) -> tuple[Package, ...]:
    """Load every package under `root`; `code_cache` keeps compiled BUILD.py files between runs."""
    cache = CodeCache(code_cache)
    packages = tuple(load_package(root, path, cache) for path in find_build_files(root))
    cache.save()
    return packages
