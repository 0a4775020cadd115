"""The gRPC channel to a grpc:// or grpcs:// cache: target, TLS roots, mTLS and header metadata."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from rules.cache.remote_config import RemoteConfig, RemoteConfigError

if TYPE_CHECKING:
    import grpc

# grpcio's default receive limit is 4 MiB; batches are sized below the
# server's own limit, but a server may answer with more than it accepts.
MAX_MESSAGE_BYTES = 64 << 20
_DEFAULT_PORT = 443


@dataclass(frozen=True, repr=False)
class Channel:
    """An open channel and the metadata every call carries (header values are secrets)."""

    channel: grpc.Channel
    metadata: tuple[tuple[str, str], ...]
    target: str

    def __repr__(self) -> str:
        names = [name for name, _ in self.metadata]
        return f"Channel({self.target!r}, metadata={names!r})"

    def close(self) -> None:
        self.channel.close()


def open_channel(config: RemoteConfig) -> Channel:
    """A channel to `config.url`; bad TLS files raise RemoteConfigError naming the setting.

    Nothing is sent yet: grpcio connects on the first call, so an unreachable
    server shows up there, as UNAVAILABLE, where the circuit breaker sees it.
    """
    import grpc

    split = urlsplit(config.url)
    assert split.hostname is not None  # RemoteConfig validated it
    host = f"[{split.hostname}]" if ":" in split.hostname else split.hostname
    target = f"{host}:{split.port or _DEFAULT_PORT}"
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.primary_user_agent", "rules_keras"),
        # A build retries nothing by itself: one failure is one warning and a
        # local build, and the breaker stops the rest from waiting too.
        ("grpc.enable_retries", 0),
    ]
    if split.scheme == "grpcs":
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_roots(config.ca_file),
            private_key=_read(config.client_key, "remote_client_key"),
            certificate_chain=_read(config.client_cert, "remote_client_cert"),
        )
        channel = grpc.secure_channel(target, credentials, options)
    else:
        channel = grpc.insecure_channel(target, options)
    # gRPC metadata keys are lowercase HTTP/2 header names.
    metadata = tuple((name.lower(), value) for name, value in config.headers.items())
    return Channel(channel, metadata, target)


def _roots(ca_file: str | None) -> bytes | None:
    """The CA file's PEM, else the system's bundle, else None (grpcio's bundled roots).

    grpcio ships its own roots.pem; a company CA installed into the system
    store (as .bazelrc users expect from Bazel) would not be in it.
    """
    if ca_file:
        return _read(ca_file, "remote_ca_file")
    for candidate in (os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile):
        if candidate and Path(candidate).is_file():
            try:
                return Path(candidate).read_bytes()
            except OSError:
                continue
    return None


def _read(path: str | None, setting: str) -> bytes | None:
    if not path:
        return None
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as err:
        raise RemoteConfigError(
            f"{setting}: cannot read {path}: {err.strerror or err}"
        ) from None
    if b"-----BEGIN" not in data:
        raise RemoteConfigError(f"{setting}: {path} is not a PEM file (no -----BEGIN line)")
    return data
