"""Toolchain fingerprint: python, keras, backend and third-party versions, read from metadata."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rules.core.backends import BACKENDS
from rules.core.fsio import read_json, write_json

# Distributions that provide each toolchain module. tensorflow-cpu installs the
# same `tensorflow` module as tensorflow, so both names are tried.
TOOLCHAIN_DISTS: dict[str, tuple[str, ...]] = {
    "keras": ("keras",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos"),
    "jax": ("jax",),
    "jaxlib": ("jaxlib",),
}
# Environment variables that change what an export computes. A set one enters
# every action key's toolchain and the export server's fingerprint, so setting
# or changing it rebuilds the targets and restarts the server.
NUMERICS_ENV = (
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_DETERMINISTIC_OPS",
    "TF_XLA_FLAGS",
    "XLA_FLAGS",
    "JAX_ENABLE_X64",
    "JAX_DEFAULT_MATMUL_PRECISION",
)


@dataclass(frozen=True)
class Toolchain:
    """Versions that enter every action key; a module not installed maps to None."""

    python: str
    modules: tuple[tuple[str, str | None], ...]
    module_dists: tuple[tuple[str, tuple[str, ...]], ...]
    # Only the NUMERICS_ENV variables that are set: keys stay as they were
    # for everyone who sets none.
    env: tuple[tuple[str, str], ...] = ()

    def version(self, module: str) -> str | None:
        return dict(self.modules).get(module)

    def missing_for(self, backend: str) -> list[str]:
        """Modules the backend needs that are not installed."""
        return [m for m in BACKENDS[backend].modules if importlib.util.find_spec(m) is None]

    def third_party(self, top_levels: Iterable[str]) -> dict[str, str]:
        """Distribution versions for third-party modules that model code imports."""
        by_module = dict(self.module_dists)
        found: dict[str, str] = {}
        for top in top_levels:
            for dist in by_module.get(top, ()):
                try:
                    found[dist] = installed_version(dist)
                except importlib.metadata.PackageNotFoundError:
                    continue
        return found

    def to_json(self) -> dict[str, object]:
        return {"python": self.python, **{m: v for m, v in self.modules}, **dict(self.env)}


@functools.cache
def installed_version(dist: str) -> str:
    """A distribution's version, parsed once per process.

    Each importlib.metadata.version call re-reads and parses METADATA (about
    1 ms); with one call per third-party import per target, a 100-target
    no-op spent a tenth of a second here. Installs do not change mid-build.
    """
    return importlib.metadata.version(dist)


def _dist_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return f"{name}=={installed_version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _site_fingerprint() -> list[list[object]]:
    """Installing or removing a distribution touches its site-packages folder's mtime.

    Only folders that hold installed distributions count: sys.path also holds
    the workspace itself (doit puts the dodo.py folder first), whose mtime
    changes whenever artifacts/ or .rules_keras/ is created.
    """
    stamps: list[list[object]] = []
    for entry in sys.path:
        if not entry.endswith(("site-packages", "dist-packages", ".egg", ".zip")):
            continue
        try:
            stamps.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            continue
    return stamps


def detect(cache_path: Path | None = None) -> Toolchain:
    """Read versions from installed metadata; the module->distribution map is cached on disk.

    `packages_distributions()` walks every installed distribution (about 0.1 s
    here), too slow for a no-op build, so it is cached against the mtimes of
    the sys.path folders.
    """
    python = f"{platform.python_implementation()} {platform.python_version()}"
    modules = tuple((m, _dist_version(d)) for m, d in TOOLCHAIN_DISTS.items())
    stamp = _site_fingerprint()
    cached = read_json(cache_path) if cache_path else None
    mapping: Mapping[str, list[str]]
    if (
        isinstance(cached, dict)
        and cached.get("stamp") == stamp
        and isinstance(cached.get("mapping"), dict)
        and all(
            isinstance(v, list) and all(isinstance(d, str) for d in v)
            for v in cached["mapping"].values()
        )
    ):
        mapping = cached["mapping"]
    else:
        mapping = importlib.metadata.packages_distributions()
        if cache_path is not None:
            with contextlib.suppress(OSError):
                write_json(cache_path, {"stamp": stamp, "mapping": mapping}, durable=False)
    dists = tuple(sorted((k, tuple(sorted(set(v)))) for k, v in mapping.items()))
    env = tuple((name, os.environ[name]) for name in NUMERICS_ENV if name in os.environ)
    return Toolchain(python, modules, dists, env)
