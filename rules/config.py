"""Workspace settings: `[tool.rules_keras]` in pyproject.toml, overridden by RULES_KERAS_*."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rules.cache.local import default_cache_dir
from rules.cache.remote_config import RemoteConfig, RemoteError, remote_config_from
from rules.errors import RulesError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KEYS = {
    "cache_dir": "local cache folder (env RULES_KERAS_CACHE_DIR)",
    "cache": "false turns the local cache off (env RULES_KERAS_CACHE=0)",
    "cache_max_size": "size `doit cache_gc` shrinks the local cache to, e.g. '10G'",
    "lock_timeout": "seconds to wait for another build of the same target (env "
    "RULES_KERAS_LOCK_TIMEOUT)",
    "server": "false: never keep a warm export server between builds (env RULES_KERAS_SERVER=0)",
    "server_idle_timeout": "seconds an idle export server lives (env "
    "RULES_KERAS_SERVER_IDLE_TIMEOUT)",
    "serving_root": "folder of the TF Serving tree that keras_export(serving=...) publishes to",
    "serving_keep": "how many versions of each served model to keep",
}
DEFAULT_SERVER_IDLE_TIMEOUT = 900.0
DEFAULT_SERVING_KEEP = 3
DEFAULT_LOCK_TIMEOUT = 3600.0
DEFAULT_MAX_SIZE = 10 << 30


class ConfigError(RulesError):
    """pyproject.toml or a RULES_KERAS_* variable holds a bad value."""


@dataclass(frozen=True)
class Settings:
    cache_dir: Path | None
    cache_max_size: int
    lock_timeout: float
    remote: RemoteConfig | None
    server: bool = True
    server_idle_timeout: float = DEFAULT_SERVER_IDLE_TIMEOUT
    serving_root: Path | None = None
    serving_keep: int = DEFAULT_SERVING_KEEP


def parse_size(text: str | int) -> int:
    """'500M', '10G', '1.5T' or a plain number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = str(text).strip().upper().removesuffix("B").removesuffix("I")
    try:
        if value and value[-1] in units:
            return int(float(value[:-1]) * units[value[-1]])
        return int(value)
    except ValueError:
        raise ConfigError(f"expected a size like '10G' or '500M'. Received: {text!r}") from None


def format_size(size: int) -> str:
    """Bytes as a short human-readable string, e.g. '1.5G'."""
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def load(root: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the workspace's settings; unknown keys are errors with a suggestion."""
    env = os.environ if environ is None else environ
    table: dict[str, Any] = {}
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"pyproject.toml: {err}") from err
        table = data.get("tool", {}).get("rules_keras", {})
    for key in table:
        if key not in KEYS and not key.startswith("remote_"):
            raise ConfigError(
                f"pyproject.toml [tool.rules_keras]: unknown key {key!r}."
                + did_you_mean(key, KEYS)
            )
    enabled = table.get("cache", True)
    if "RULES_KERAS_CACHE" in env:
        enabled = env["RULES_KERAS_CACHE"].strip().lower() not in ("0", "false", "no", "off")
    cache_dir = default_cache_dir(table.get("cache_dir")) if enabled else None
    default_timeout = table.get("lock_timeout", DEFAULT_LOCK_TIMEOUT)
    timeout_text = env.get("RULES_KERAS_LOCK_TIMEOUT", default_timeout)
    try:
        lock_timeout = float(timeout_text)
    except (TypeError, ValueError):
        raise ConfigError(f"lock_timeout must be seconds. Received: {timeout_text!r}") from None
    server = table.get("server", True)
    if "RULES_KERAS_SERVER" in env:
        server = env["RULES_KERAS_SERVER"].strip().lower() not in ("0", "false", "no", "off")
    idle_text = env.get(
        "RULES_KERAS_SERVER_IDLE_TIMEOUT",
        table.get("server_idle_timeout", DEFAULT_SERVER_IDLE_TIMEOUT),
    )
    try:
        idle = float(idle_text)
        keep = int(table.get("serving_keep", DEFAULT_SERVING_KEEP))
    except (TypeError, ValueError):
        raise ConfigError(
            "server_idle_timeout must be seconds and serving_keep a whole number. "
            f"Received: {idle_text!r}, {table.get('serving_keep')!r}"
        ) from None
    serving = table.get("serving_root")
    try:
        remote = remote_config_from(table, env)
    except RemoteError as err:
        raise ConfigError(str(err)) from err
    return Settings(
        cache_dir=cache_dir,
        cache_max_size=parse_size(table.get("cache_max_size", DEFAULT_MAX_SIZE)),
        lock_timeout=lock_timeout,
        remote=remote,
        server=bool(server),
        server_idle_timeout=idle,
        serving_root=(root / serving).resolve() if isinstance(serving, str) else None,
        serving_keep=max(keep, 1),
    )
