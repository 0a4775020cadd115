"""`doit server_status` and `doit server_stop`: the export servers of one workspace, in words."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from rules.core.backends import BACKENDS
from rules.execution.server import client as server_client
from rules.execution.server.protocol import (
    SERVER_DIR,
    fingerprint,
    server_paths,
)


def status_lines(state: Path, toolchain: Mapping[str, object], enabled: bool) -> list[str]:
    """One paragraph per backend: running (pid, uptime, idle, jobs, toolchain) or not."""
    lines = [] if enabled else [
        "the export server is off for this workspace (server = false or RULES_KERAS_SERVER=0)"
    ]
    if not (state / SERVER_DIR).is_dir():
        return [*lines, "no export server has run in this workspace"]
    for backend in BACKENDS:
        paths = server_paths(state, backend)
        found = server_client.status(paths)
        if not found.running:
            lines.append(f"{backend}: not running" + (f" ({found.note})" if found.note else ""))
            continue
        if found.details is None:
            lines.append(f"{backend}: pid {found.pid}, {found.note}")
            continue
        info = found.details
        matches = info.get("fingerprint") == fingerprint(backend, toolchain)
        running = info.get("running") or []
        activity = (
            f"building {', '.join(running)}" if running
            else f"idle for {_duration(float(info['idle_for']))} of "
            f"{_duration(float(info['idle_timeout']))}"
        )
        lines += [
            f"{backend}: running, pid {found.pid}, up {_duration(time.time() - info['started'])},"
            f" {activity}, {info.get('jobs', 0)} jobs served",
            "  toolchain: " + ("matches this environment" if matches else
                               "differs from this environment; the next build restarts it"),
            f"  socket: {paths.socket}",
            f"  log: {paths.log}",
        ]
    return lines


def stop_lines(state: Path) -> list[str]:
    """Stop every backend's server; one line per server stopped or cleaned up."""
    if not (state / SERVER_DIR).is_dir():
        return ["no export server is running"]
    lines = []
    for backend in BACKENDS:
        paths = server_paths(state, backend)
        pid = server_client.stop(paths)
        if pid is not None:
            lines.append(f"stopped the {backend} export server (pid {pid})")
    return lines or ["no export server is running"]


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
