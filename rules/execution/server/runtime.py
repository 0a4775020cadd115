"""Where the machine's export servers live: one per Python environment and backend, per user.

A server holds no workspace's code: every job is a fresh fork that takes its
working folder, sys.path and environment from the request (server.child).
So one warm server can serve every workspace of this user that builds with
the same environment, and only the socket's location ties a build to it.
That location is a per-user runtime folder, owner-only, with one set of
files (<backend>-<key>.sock/.json/.log/.lock) per environment key.

The key holds what two builds may legitimately differ in *at the same time*:
the interpreter and its prefix, where `rules` is imported from, PYTHONPATH,
and the environment variables read once by the runtime or changing numerics.
Two such builds get two servers, instead of making one restart for the other
on every job. What only moves forward in time (installed versions, the rules
source of an editable install) stays out of the key and in the fingerprint
(protocol.fingerprint): a server that has gone stale is replaced in place,
letting the jobs it runs for other workspaces finish first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import rules
from rules.core.hashing import sha256_json
from rules.core.toolchain import NUMERICS_ENV
from rules.execution.server.protocol import RUNTIME_ENV, ServerPaths, private_folder

RUNTIME_DIR_ENV = "RULES_KERAS_RUNTIME_DIR"
# 48 bits: collisions between one user's environments are not a concern, and
# the socket path stays short (sockaddr_un holds about 100 bytes).
_KEY_LENGTH = 12


def runtime_dir() -> Path:
    """$RULES_KERAS_RUNTIME_DIR, else $XDG_RUNTIME_DIR/rules_keras, else /tmp/rules_keras-<uid>.

    XDG_RUNTIME_DIR is per user, in memory and emptied at logout: the right
    place for sockets. It is used only when it is ours (a `su` shell can
    inherit another user's). The fallback is /tmp itself, not TMPDIR:
    builds that set different TMPDIRs must still find the same servers.
    """
    explicit = os.environ.get(RUNTIME_DIR_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        try:
            if os.stat(xdg).st_uid == os.getuid():
                return Path(xdg) / "rules_keras"
        except OSError:
            pass
    return Path("/tmp") / f"rules_keras-{os.getuid()}"


def environment_key(backend: str) -> str:
    """The short hash naming this environment's server for `backend`; see the module docstring."""
    return sha256_json(
        {
            "backend": backend,
            "executable": sys.executable,
            "prefix": sys.prefix,
            "rules": str(Path(rules.__file__).resolve().parent),
            "pythonpath": os.environ.get("PYTHONPATH", ""),
            "env": {k: os.environ[k] for k in (*RUNTIME_ENV, *NUMERICS_ENV) if k in os.environ},
        }
    )[:_KEY_LENGTH]


def shared_paths(backend: str, *, create: bool = True) -> ServerPaths:
    """This environment's server for `backend`; with `create`, the runtime folder is made 0700."""
    folder = runtime_dir()
    if create:
        private_folder(folder)
    return ServerPaths(folder, f"{backend}-{environment_key(backend)}", backend)


def servers_in(folder: Path) -> list[ServerPaths]:
    """Every server with a socket or info file in `folder`, of any environment, by name."""
    names = {p.stem for pattern in ("*.sock", "*.json") for p in folder.glob(pattern)}
    found = []
    for name in sorted(names):
        backend, dash, key = name.rpartition("-")
        if dash and len(key) == _KEY_LENGTH:
            found.append(ServerPaths(folder, name, backend))
    return found
