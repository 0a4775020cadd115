"""Toolchain fingerprint: python, keras, backend and third-party versions, read from metadata."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import re
import sys
import threading
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
                version = installed_version(dist)
                if version is not None:
                    found[dist] = version
        return found

    def to_json(self) -> dict[str, object]:
        return {"python": self.python, **{m: v for m, v in self.modules}, **dict(self.env)}


# Installed versions by normalized distribution name (None: not installed).
# detect() fills it from the on-disk cache when the site folders are
# unchanged, so a no-op build never imports importlib.metadata (30 ms) nor
# parses a METADATA file (1 ms each, per third-party import per target).
_VERSIONS: dict[str, str | None] = {}
# True once _VERSIONS holds the full listing: a name missing is not installed.
_COMPLETE = [False]
_VERSIONS_LOCK = threading.Lock()


def _normalize(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def installed_version(dist: str) -> str | None:
    """A distribution's version, or None if it is not installed; read once per process."""
    name = _normalize(dist)
    with _VERSIONS_LOCK:
        if name in _VERSIONS or _COMPLETE[0]:
            return _VERSIONS.get(name)
    import importlib.metadata

    try:
        version: str | None = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = None
    with _VERSIONS_LOCK:
        _VERSIONS[name] = version
    return version


def _all_versions() -> dict[str, str]:
    """Every installed distribution's version, in one pass over the metadata."""
    import importlib.metadata

    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        # The first on sys.path wins, as it does for importlib.metadata.version.
        if isinstance(name, str) and _normalize(name) not in found:
            found[_normalize(name)] = dist.version
    return found


def _dist_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        version = installed_version(name)
        if version is not None:
            return f"{name}=={version}"
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
        and isinstance(cached.get("versions"), dict)
        and all(isinstance(v, str) for v in cached["versions"].values())
    ):
        mapping = cached["mapping"]
        versions: dict[str, str] = cached["versions"]
    else:
        import importlib.metadata

        mapping = importlib.metadata.packages_distributions()
        versions = _all_versions()
        if cache_path is not None:
            with contextlib.suppress(OSError):
                write_json(cache_path, {"stamp": stamp, "mapping": mapping,
                                        "versions": versions}, durable=False)
    with _VERSIONS_LOCK:
        _VERSIONS.clear()
        _VERSIONS.update(versions)
        _COMPLETE[0] = True
    modules = tuple((m, _dist_version(d)) for m, d in TOOLCHAIN_DISTS.items())
    dists = tuple(sorted((k, tuple(sorted(set(v)))) for k, v in mapping.items()))
    env = tuple((name, os.environ[name]) for name in NUMERICS_ENV if name in os.environ)
    return Toolchain(python, modules, dists, env)
