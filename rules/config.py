"""Workspace settings: `[tool.rules_keras]` in pyproject.toml, overridden by RULES_KERAS_*.

What each setting is, its type, variable and default live in one table
(rules.core.settings); this module reads pyproject.toml and turns the
checked values into the frozen Settings a build uses.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from rules.cache.remote_config import RemoteConfig, RemoteError, remote_config_from
from rules.core.frozen import FrozenMap
from rules.core.settings import ConfigError, parse_size, resolve
from rules.execution.ray.config import RayConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "Settings", "load"]


@dataclass(frozen=True)
class Settings:
    """The settings of one build; `cache_dir` is None when the local cache is off."""

    cache_dir: Path | None
    cache_max_size: int
    lock_timeout: float
    remote: RemoteConfig | None
    server: bool = True
    server_idle_timeout: float = 900.0
    serving_root: Path | None = None
    serving_keep: int = 3
    # Variables that hold remote-cache headers (secrets): kept from workers.
    header_vars: frozenset[str] = frozenset()
    undeclared_inputs: str = "error"
    strict_verification: bool = False
    # None unless executor = "ray".
    ray: RayConfig | None = None


def load(root: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the workspace's settings; `environ` (default: os.environ) is the only environment."""
    env = os.environ if environ is None else environ
    table = _pyproject_table(root)
    values = resolve(table, env)
    try:
        remote = remote_config_from(table, env)
    except RemoteError as err:
        raise ConfigError(str(err)) from None
    serving = values["serving_root"]
    return Settings(
        # An empty RULES_KERAS_CACHE_DIR counts as unset: the file's value applies.
        cache_dir=_cache_dir(values["cache_dir"] or table.get("cache_dir"))
        if values["cache"] else None,
        cache_max_size=parse_size(values["cache_max_size"], "cache_max_size"),
        lock_timeout=values["lock_timeout"],
        remote=remote,
        server=values["server"],
        server_idle_timeout=values["server_idle_timeout"],
        serving_root=(root / serving).resolve() if serving else None,
        serving_keep=values["serving_keep"],
        header_vars=frozenset(values["remote_headers_env"]),
        undeclared_inputs=values["undeclared_inputs"],
        strict_verification=values["strict_verification"],
        ray=_ray(values, env),
    )


def _ray(values: Mapping[str, Any], env: Mapping[str, str]) -> RayConfig | None:
    """executor = "ray": the cluster from RULES_KERAS_RAY_ADDRESS, else Ray's own
    RAY_ADDRESS, else the file's ray_address, else "auto"."""
    if values["executor"] != "ray":
        return None
    ours = env.get("RULES_KERAS_RAY_ADDRESS", "").strip()
    address = ours or env.get("RAY_ADDRESS", "").strip() or values["ray_address"] or "auto"
    return RayConfig(
        address=address,
        runtime_env=FrozenMap(values["ray_runtime_env"] or {}),
        on_mismatch=values["ray_toolchain_mismatch"],
        idle_timeout=values["server_idle_timeout"],
    )


def _pyproject_table(root: Path) -> dict[str, Any]:
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"pyproject.toml: {err}") from err
    table = data.get("tool", {}).get("rules_keras", {})
    if not isinstance(table, dict):
        raise ConfigError("pyproject.toml: [tool.rules_keras] must be a table")
    return table


def _cache_dir(configured: str | None) -> Path:
    """The configured folder (an empty value counts as unset), else the user's cache dir."""
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("rules_keras"))
