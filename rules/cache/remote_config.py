"""Remote cache settings: the URL, upload switch, headers and limits, with secrets redacted."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from rules.core.settings import BY_KEY, ConfigError, parse_size, resolve

# Named in messages; the settings table is where they are defined.
ENV_UPLOAD = str(BY_KEY["remote_upload"].env)
ENV_HEADERS = str(BY_KEY["remote_headers"].env)
ENV_USER = str(BY_KEY["remote_user"].env)
ENV_PASSWORD = str(BY_KEY["remote_password"].env)

# http(s): Bazel's HTTP cache protocol (remote.py); grpc(s): REAPI v2 (grpc_remote.py).
SCHEMES = ("http", "https", "grpc", "grpcs")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
CREDENTIALS_HINT = (
    f"check {ENV_USER}/{ENV_PASSWORD}, the user:password in the cache URL, "
    f"or the Authorization header from {ENV_HEADERS}/remote_headers_env"
)


class RemoteError(Exception):
    """Base of every error the remote cache raises; callers warn and build locally."""



class RemoteConfigError(RemoteError, ConfigError):
    """`[tool.rules_keras]` or a RULES_KERAS_REMOTE_* variable is malformed."""


@dataclass(frozen=True, repr=False)
class RemoteConfig:
    """Where the remote cache is and how to talk to it.

    `url` never holds credentials: a `user:password@` in it is moved into an
    `Authorization: Basic` header at construction, and `repr()` shows header
    names only, so a config can be logged safely.
    """

    url: str
    """Base URL. http(s): `/ac/<key>` and `/cas/<sha256>` are appended; grpc(s): host:port."""
    upload: bool = False
    """Send PUT requests. Off by default: only CI should write to a shared cache."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra request headers, typically `Authorization`. Values are secrets."""
    timeout: float = 10.0
    """Seconds allowed to connect, and between two reads or writes on the socket."""
    parallel: int = 4
    """Transfers in flight at once in get_blobs/put_blobs (one connection each)."""
    instance_name: str = ""
    """REAPI instance name (grpc only), as Bazel's --remote_instance_name."""
    ca_file: str | None = None
    """PEM roots to trust instead of the system's (grpcs only)."""
    client_cert: str | None = None
    """PEM client certificate for mTLS (grpcs only); needs client_key."""
    client_key: str | None = None
    """PEM private key of client_cert. The path is not secret; the file is."""
    max_blob_size: int = 8 << 30
    """Largest blob downloaded; an entry claiming a bigger one is refused before any transfer."""

    def __post_init__(self) -> None:
        split = urlsplit(self.url)
        if split.scheme not in SCHEMES or not split.hostname:
            raise RemoteConfigError(
                "remote_cache must be an http://, https://, grpc:// or grpcs:// URL with a "
                f"host, like 'http://cache.example:8080/bazel' or 'grpcs://cache.example:443'. "
                f"Received: {redact(self.url)!r}"
            )
        self._check_grpc_options(split.scheme, split.path)
        try:
            split.port  # noqa: B018 - urlsplit validates the port lazily
        except ValueError:
            raise RemoteConfigError(
                f"remote_cache has an invalid port. Received: {redact(self.url)!r}"
            ) from None
        if split.query or split.fragment:
            raise RemoteConfigError(
                f"remote_cache must not have a query or fragment. Received: {redact(self.url)!r}"
            )
        headers = dict(self.headers)
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
                raise RemoteConfigError(
                    f"remote cache header {name!r} has an invalid name or a line break in its value"
                )
        if split.username is not None:
            if has_header(headers, "Authorization"):
                raise RemoteConfigError(
                    "remote_cache has user:password in its URL and an Authorization header "
                    "is set as well; keep only one"
                )
            headers["Authorization"] = _basic_auth(
                unquote(split.username), unquote(split.password or "")
            )
        netloc = split.netloc.rpartition("@")[2]
        object.__setattr__(self, "url", f"{split.scheme}://{netloc}{split.path.rstrip('/')}")
        object.__setattr__(self, "headers", MappingProxyType(headers))
        if isinstance(self.timeout, bool) or not (
            isinstance(self.timeout, int | float) and 0 < self.timeout < math.inf
        ):
            raise RemoteConfigError(
                f"remote_timeout must be a positive number of seconds. Received: {self.timeout!r}"
            )
        if (
            isinstance(self.parallel, bool)
            or not isinstance(self.parallel, int)
            or (self.parallel < 1)
        ):
            raise RemoteConfigError(
                f"remote_parallel must be an integer >= 1. Received: {self.parallel!r}"
            )

    @property
    def is_grpc(self) -> bool:
        """Whether the URL names a REAPI gRPC cache rather than an HTTP one."""
        return urlsplit(self.url).scheme in ("grpc", "grpcs")

    def _check_grpc_options(self, scheme: str, path: str) -> None:
        grpc_only = {
            "remote_instance_name": self.instance_name,
            "remote_ca_file": self.ca_file,
            "remote_client_cert": self.client_cert,
            "remote_client_key": self.client_key,
        }
        if scheme in ("http", "https"):
            given = [name for name, value in grpc_only.items() if value]
            if given:
                # Silently ignoring a client certificate would hide why the
                # server refuses us; an https cache takes SSL_CERT_FILE instead.
                raise RemoteConfigError(
                    f"{', '.join(given)} only apply to a grpc:// or grpcs:// remote_cache; "
                    f"remove them for {redact(self.url)!r}"
                )
            return
        if path.strip("/"):
            raise RemoteConfigError(
                "a grpc remote_cache has no path; put the instance name in remote_instance_name "
                f"instead. Received: {redact(self.url)!r}"
            )
        if scheme == "grpc" and (self.ca_file or self.client_cert or self.client_key):
            raise RemoteConfigError(
                "remote_ca_file, remote_client_cert and remote_client_key need TLS: "
                f"use grpcs:// instead of {redact(self.url)!r}"
            )
        if bool(self.client_cert) != bool(self.client_key):
            raise RemoteConfigError(
                "mTLS needs both remote_client_cert and remote_client_key; only one is set"
            )

    def __repr__(self) -> str:
        headers = {name: "<redacted>" for name in self.headers}
        grpc = f", instance_name={self.instance_name!r}" if self.is_grpc else ""
        return (
            f"RemoteConfig(url={self.url!r}, upload={self.upload!r}, headers={headers!r}, "
            f"timeout={self.timeout!r}, parallel={self.parallel!r}, "
            f"max_blob_size={self.max_blob_size!r}{grpc})"
        )


def remote_config_from(
    settings: Mapping[str, Any], environ: Mapping[str, str]
) -> RemoteConfig | None:
    """Build the remote config from `[tool.rules_keras]` and the environment, or None if unset.

    The `remote_*` rows of the settings table (rules.core.settings) say where
    each value comes from; variables win over the file. A set but empty
    RULES_KERAS_REMOTE_CACHE turns the remote cache off. RULES_KERAS_REMOTE_USER
    and _PASSWORD replace any user:password in the URL. `remote_headers_env`
    names variables that hold more `Name: value` lines, so secrets stay out of
    pyproject.toml; unset ones are skipped, since developers often have no token.
    """
    try:
        values = resolve(settings, environ, prefix="remote_")
    except ConfigError as err:
        raise RemoteConfigError(str(err)) from None
    url = values["remote_cache"]
    if not url or not url.strip():
        return None
    headers: dict[str, str] = {}
    for name in values["remote_headers_env"]:
        if name in environ:
            headers.update(_parse_header_lines(name, environ[name]))
    if values["remote_headers"] is not None:
        headers.update(_parse_header_lines(ENV_HEADERS, values["remote_headers"]))
    user, password = values["remote_user"], values["remote_password"]
    if user is not None or password is not None:
        if has_header(headers, "Authorization"):
            raise RemoteConfigError(
                f"{ENV_USER}/{ENV_PASSWORD} and an Authorization header are both set; keep only one"
            )
        split = urlsplit(url.strip())
        # The variables replace credentials written in the URL rather than
        # clash with them: CI usually injects them over a checked-in URL.
        url = split._replace(netloc=split.netloc.rpartition("@")[2]).geturl()
        headers["Authorization"] = _basic_auth(user or "", password or "")
    return RemoteConfig(
        url=url.strip(),
        upload=values["remote_upload"],
        headers=headers,
        timeout=values["remote_timeout"],
        parallel=values["remote_parallel"],
        instance_name=values["remote_instance_name"] or "",
        ca_file=values["remote_ca_file"] or None,
        client_cert=values["remote_client_cert"] or None,
        client_key=values["remote_client_key"] or None,
        max_blob_size=parse_size(values["remote_max_blob_size"], "remote_max_blob_size"),
    )


def _basic_auth(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def has_header(headers: Mapping[str, str], name: str) -> bool:
    return any(key.lower() == name.lower() for key in headers)


def redact(url: str) -> str:
    """`url` without its user:password, for messages."""
    split = urlsplit(url)
    if "@" not in split.netloc:
        return url
    return split._replace(netloc="***@" + split.netloc.rpartition("@")[2]).geturl()


def _parse_header_lines(source: str, text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name.strip()):
            # The line may hold a token: name its position, never its text.
            raise RemoteConfigError(f"{source} line {number} is not a `Name: value` header")
        headers[name.strip()] = value.strip()
    return headers
