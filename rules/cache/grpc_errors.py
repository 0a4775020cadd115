"""gRPC status codes as the remote cache's errors: unavailable, auth, wrong instance, other."""

from __future__ import annotations

import re

from rules.cache.remote_config import ENV_HEADERS, RemoteConfig, RemoteError
from rules.cache.transfer import RemoteAuthError, RemoteUnavailable

# Codes after which the server is no use to this build (the breaker trips).
_UNAVAILABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED",
                          "INTERNAL", "UNKNOWN", "ABORTED", "CANCELLED", "DATA_LOSS"})
# google.rpc.Code, for statuses that arrive as numbers inside batch responses.
_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
          "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
          "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
          "UNAUTHENTICATED")


# grpcio reports a failed handshake as UNAVAILABLE, with OpenSSL's words in the
# details; a server that wants a client certificate just closes the socket.
_TLS_FAILURE = re.compile(r"handshake|CERTIFICATE|SSL|Socket closed", re.IGNORECASE)


class InstanceError(RemoteError):
    """The server has no instance by the configured remote_instance_name."""


def code_name(code: int) -> str:
    """'NOT_FOUND' for 5, and so on; the number itself for codes gRPC does not define."""
    return _NAMES[code] if 0 <= code < len(_NAMES) else str(code)


def status_error(
    config: RemoteConfig, what: str, code: str, details: str, *, read: bool
) -> RemoteError:
    """The RemoteError for a failed call `what` with gRPC status `code` (its name)."""
    url = config.url
    if code in _UNAVAILABLE:
        why = {
            "UNAVAILABLE": "cannot reach the server; is the cache server running?",
            "DEADLINE_EXCEEDED": f"no answer within {config.timeout:g}s (remote_timeout)",
        }.get(code, "the server failed")
        if code == "UNAVAILABLE" and url.startswith("grpcs:") and _TLS_FAILURE.search(details):
            why = ("TLS handshake failed; if the server's certificate is signed by a private CA "
                   "set remote_ca_file, and if it requires client certificates (mTLS) set "
                   "remote_client_cert and remote_client_key")
        return RemoteUnavailable(f"remote cache {url}: {what} failed: {why} ({code}: {details})")
    if code == "UNAUTHENTICATED":
        if config.headers:
            # Header values are secrets: name the headers, never show them.
            return RemoteAuthError(
                f"remote cache {url} rejected the credentials (UNAUTHENTICATED: {details}); "
                f"check the headers {sorted(config.headers)} from {ENV_HEADERS} or "
                "remote_headers_env"
            )
        return RemoteAuthError(
            f"remote cache {url} requires credentials (UNAUTHENTICATED: {details}); set the "
            "header your server expects (e.g. `authorization: Bearer <token>` or "
            f"`x-buildbuddy-api-key: <key>`) in {ENV_HEADERS} or remote_headers_env"
        )
    if code == "PERMISSION_DENIED":
        may_not = "read from it" if read else "write to it (or set remote_upload = false)"
        return RemoteAuthError(
            f"remote cache {url} refused {what} (PERMISSION_DENIED: {details}); these "
            f"credentials may not {may_not}"
        )
    if code == "INVALID_ARGUMENT" and "instance" in details.lower():
        # BuildGrid: "Invalid instance name: [x]"; others say much the same.
        return InstanceError(
            f"remote cache {url} has no instance {config.instance_name!r} "
            f"(remote_instance_name): {details}; use the instance name of your "
            ".bazelrc's --remote_instance_name"
        )
    return RemoteError(f"remote cache {url}: {what} failed ({code}: {details})")
