"""HTTP statuses as the remote cache's errors: unavailable, auth, misconfigured server, other."""

from __future__ import annotations

from rules.cache.remote_config import (
    CREDENTIALS_HINT,
    ENV_PASSWORD,
    ENV_USER,
    RemoteError,
)
from rules.cache.transfer import RemoteAuthError, RemoteUnavailable


def status_error(status: int, reason: str | None, method: str, url: str, *,
                 sends_credentials: bool) -> RemoteError:
    """The RemoteError for an unexpected status, saying what to change where there is a fix."""
    if status in (401, 403):
        if status == 401 and not sends_credentials:
            return RemoteAuthError(
                f"remote cache requires credentials (HTTP 401) for {url}; "
                f"set {ENV_USER} and {ENV_PASSWORD}"
            )
        if method == "PUT" and status == 403:
            return RemoteAuthError(
                f"remote cache refused the upload (HTTP 403) to {url}: this endpoint or "
                f"these credentials are read-only. For write access {CREDENTIALS_HINT}; "
                "or set remote_upload = false"
            )
        return RemoteAuthError(
            f"remote cache rejected the credentials (HTTP {status}) for {url}; {CREDENTIALS_HINT}"
        )
    if status >= 500:
        return RemoteUnavailable(f"remote cache {method} {url} failed with HTTP {status} {reason}")
    if status == 405 and method == "PUT":
        return RemoteError(
            f"remote cache {url} does not accept uploads (HTTP 405); enable WebDAV PUT "
            "on the server (nginx: dav_methods PUT) or set remote_upload = false"
        )
    if status == 413:
        return RemoteError(
            f"remote cache {url} refused an upload as too large (HTTP 413); raise the "
            "server's body size limit (nginx: client_max_body_size 0)"
        )
    if 300 <= status < 400:
        return RemoteError(
            f"remote cache {method} {url} answered a redirect (HTTP {status}), which is "
            "not followed; set remote_cache to the final URL"
        )
    return RemoteError(f"remote cache {method} {url} failed with HTTP {status} {reason}")
