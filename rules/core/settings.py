"""The settings table: every `[tool.rules_keras]` key and RULES_KERAS_* variable, and its parser.

One row per setting: its key, its type, its environment variable, its
default and its help. The parser reads pyproject's table and the environment
against it, so a value is checked the same way wherever it comes from: a bad
one is an error naming the setting and what was expected, with a suggestion
for a misspelt key or word (`RULES_KERAS_SERVER=flase`), never a silent
default. README's settings table is checked against this one by a test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rules.core.errors import RulesError, did_you_mean

Kind = Literal["bool", "seconds", "size", "count", "text", "names", "table", "choice"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class ConfigError(RulesError, ValueError):
    """pyproject.toml or a RULES_KERAS_* variable holds a bad value."""


@dataclass(frozen=True)
class Setting:
    """One setting. `env` is its variable; `in_file` False means environment only (secrets)."""

    key: str
    kind: Kind
    env: str | None
    default: Any
    help: str
    in_file: bool = True
    choices: tuple[str, ...] = ()


SETTINGS: tuple[Setting, ...] = (
    Setting("cache", "bool", "RULES_KERAS_CACHE", True,
            "false turns the local cache off"),
    Setting("cache_dir", "text", "RULES_KERAS_CACHE_DIR", None,
            "local cache folder; default: the user cache dir (~/.cache/rules_keras)"),
    Setting("cache_max_size", "size", None, "10G",
            "what `doit cache_gc` shrinks the local cache to, e.g. '10G'"),
    Setting("lock_timeout", "seconds", "RULES_KERAS_LOCK_TIMEOUT", 3600.0,
            "seconds to wait for another build of the same target"),
    Setting("server", "bool", "RULES_KERAS_SERVER", True,
            "false: never keep a warm export server between builds"),
    Setting("server_idle_timeout", "seconds", "RULES_KERAS_SERVER_IDLE_TIMEOUT", 900.0,
            "seconds an idle export server lives"),
    Setting("serving_root", "text", None, None,
            "folder of the TF Serving tree that keras_export(serving=...) publishes to"),
    Setting("serving_keep", "count", None, 3,
            "versions kept per served model"),
    Setting("undeclared_inputs", "choice", "RULES_KERAS_UNDECLARED_INPUTS", "error",
            "a workspace file a job reads but does not declare: 'error' fails the target, "
            "'warn' only warns", choices=("error", "warn")),
    Setting("strict_verification", "bool", "RULES_KERAS_STRICT_VERIFICATION", False,
            "true: a parity check whose Keras outputs are constant, zero or NaN fails the target"),
    Setting("remote_cache", "text", "RULES_KERAS_REMOTE_CACHE", None,
            "remote cache URL (http, https, grpc, grpcs); an empty variable turns it off"),
    Setting("remote_upload", "bool", "RULES_KERAS_REMOTE_UPLOAD", False,
            "upload builds to the remote cache (CI only)"),
    Setting("remote_timeout", "seconds", "RULES_KERAS_REMOTE_TIMEOUT", 10.0,
            "seconds to connect, and between two reads or writes; a whole transfer gets twice "
            "this plus 1 s per MiB"),
    Setting("remote_parallel", "count", None, 4,
            "concurrent transfers"),
    Setting("remote_max_blob_size", "size", "RULES_KERAS_REMOTE_MAX_BLOB_SIZE", "8G",
            "largest blob taken from the remote cache; a bigger one is refused before any "
            "byte is written"),
    Setting("remote_headers_env", "names", None, (),
            "environment variables holding `Name: value` header lines"),
    Setting("remote_headers", "text", "RULES_KERAS_REMOTE_HEADERS", None,
            "`Name: value` header lines, newline-separated", in_file=False),
    Setting("remote_user", "text", "RULES_KERAS_REMOTE_USER", None,
            "basic-auth user for the remote cache", in_file=False),
    Setting("remote_password", "text", "RULES_KERAS_REMOTE_PASSWORD", None,
            "basic-auth password for the remote cache", in_file=False),
    Setting("remote_instance_name", "text", "RULES_KERAS_REMOTE_INSTANCE_NAME", None,
            "REAPI instance name on a grpc:// or grpcs:// cache, as in .bazelrc"),
    Setting("remote_ca_file", "text", "RULES_KERAS_REMOTE_CA_FILE", None,
            "PEM file of the CA that signed a grpcs:// cache's certificate; default: system roots"),
    Setting("remote_client_cert", "text", "RULES_KERAS_REMOTE_CLIENT_CERT", None,
            "PEM client certificate for mTLS to a grpcs:// cache"),
    Setting("remote_client_key", "text", "RULES_KERAS_REMOTE_CLIENT_KEY", None,
            "PEM private key of remote_client_cert"),
    Setting("executor", "choice", "RULES_KERAS_EXECUTOR", "local",
            "where exports run: 'local', or 'ray' for a Ray cluster", choices=("local", "ray")),
    Setting("ray_address", "text", "RULES_KERAS_RAY_ADDRESS", None,
            "the Ray cluster: 'host:port', 'ray://host:port' or 'auto'; Ray's own RAY_ADDRESS "
            "comes between the variable and the file; default 'auto'"),
    Setting("ray_runtime_env", "table", None, None,
            "Ray's runtime_env for the actions (pip, env_vars, container, ...)"),
    Setting("ray_toolchain_mismatch", "choice", "RULES_KERAS_RAY_TOOLCHAIN_MISMATCH", "local",
            "when a node's toolchain differs: 'local' builds the action here, 'error' fails it",
            choices=("local", "error")),
)
BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


def resolve(
    table: Mapping[str, Any], environ: Mapping[str, str], *, prefix: str = ""
) -> dict[str, Any]:
    """Every setting whose key starts with `prefix`: the variable's value, else the file's, else
    the default. Unknown keys with that prefix are errors with a suggestion."""
    known = [s.key for s in SETTINGS if s.in_file]
    for key in table:
        if not key.startswith(prefix):
            continue
        setting = BY_KEY.get(key)
        if setting is None or not setting.in_file:
            why = (" It is a secret: set it in the environment as "
                   f"{setting.env}." if setting is not None else did_you_mean(key, known))
            raise ConfigError(f"pyproject.toml [tool.rules_keras]: unknown key {key!r}.{why}")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if not setting.key.startswith(prefix):
            continue
        text = environ.get(setting.env) if setting.env is not None else None
        # An empty variable counts as unset, except for a text setting where
        # empty is a value (RULES_KERAS_REMOTE_CACHE= turns the remote off).
        if text is not None and (text.strip() or setting.kind == "text"):
            values[setting.key] = from_text(setting, text)
        elif setting.key in table:
            values[setting.key] = from_file(setting, table[setting.key])
        else:
            values[setting.key] = setting.default
    return values


def from_text(setting: Setting, text: str) -> Any:
    """Parse an environment variable's text for `setting`."""
    where = setting.env or setting.key
    value = text.strip()
    if setting.kind == "bool":
        return parse_bool(value, where)
    if setting.kind == "seconds":
        try:
            seconds = float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number of seconds. Received: {text!r}") from None
        return _seconds(seconds, where)
    if setting.kind == "count":
        if not value.isdigit():
            raise ConfigError(f"{where} must be an integer >= 1. Received: {text!r}")
        return _count(int(value), where)
    if setting.kind == "size":
        return parse_size(value, where)
    if setting.kind == "choice":
        return _choice(setting, value, where)
    if setting.kind in ("names", "table"):
        raise ConfigError(f"{where} cannot be set from the environment")
    return text


def from_file(setting: Setting, value: Any) -> Any:
    """Check a pyproject.toml value for `setting`; TOML already typed it."""
    where = f"[tool.rules_keras] {setting.key}"
    if setting.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false. Received: {value!r}")
        return value
    if setting.kind == "seconds":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number of seconds. Received: {value!r}")
        return _seconds(float(value), where)
    if setting.kind == "count":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer >= 1. Received: {value!r}")
        return _count(value, where)
    if setting.kind == "size":
        return parse_size(value, where)
    if setting.kind == "names":
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise ConfigError(
                f"{where} must be a list of environment variable names. Received: {value!r}"
            )
        return tuple(value)
    if setting.kind == "table":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table. Received: {value!r}")
        return dict(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string. Received: {value!r}")
    if setting.kind == "choice":
        return _choice(setting, value, where)
    return value


def parse_bool(text: str, where: str) -> bool:
    """1/true/yes/on or 0/false/no/off, any case; anything else is an error, never a guess."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(
        f"{where} must be 1 or 0 (or true/false, yes/no, on/off). Received: {text!r}."
        + did_you_mean(lowered, _TRUE + _FALSE)
    )


def parse_size(value: object, where: str = "size") -> int:
    """'500M', '10G', '1.5T' or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    try:
        if text and text[-1] in _UNITS:
            size = int(float(text[:-1]) * _UNITS[text[-1]])
        else:
            size = int(text)
        if size < 0:
            raise ValueError(size)
        return size
    except ValueError:
        raise ConfigError(
            f"{where}: expected a size like '10G' or '500M'. Received: {value!r}"
        ) from None


def format_size(size: int) -> str:
    """Bytes as a short human-readable string, e.g. '1.5G'."""
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def _seconds(value: float, where: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where} must be a number of seconds >= 0. Received: {value!r}")
    return value


def _count(value: int, where: str) -> int:
    if value < 1:
        raise ConfigError(f"{where} must be an integer >= 1. Received: {value!r}")
    return value


def _choice(setting: Setting, value: str, where: str) -> str:
    if value not in setting.choices:
        raise ConfigError(
            f"{where} must be one of {list(setting.choices)}. Received: {value!r}."
            + did_you_mean(value, setting.choices)
        )
    return value
