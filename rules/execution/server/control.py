"""`doit server_status` and `doit server_stop`: this environment's export servers, in words."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from rules.core.backends import BACKENDS
from rules.execution.server import client as server_client
from rules.execution.server.protocol import fingerprint, read_info
from rules.execution.server.runtime import runtime_dir, servers_in, shared_paths


def status_lines(root: Path, toolchain: Mapping[str, object], enabled: bool) -> list[str]:
    """One paragraph per backend: running (pid, uptime, idle, jobs, workspaces) or not.

    The servers are this Python environment's, shared with its other
    workspaces; `root` is only marked among those they served.
    """
    lines = [] if enabled else [
        "the export server is off for this workspace (server = false or RULES_KERAS_SERVER=0)"
    ]
    folder = runtime_dir()
    ours = [shared_paths(backend, create=False) for backend in BACKENDS]
    names = {p.name for p in ours}
    if not any(p.log.exists() or p.info.exists() for p in ours):
        lines.append("no export server has run for this environment")
        ours = []
    for paths in ours:
        backend = paths.backend
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
        served = info.get("workspaces") or {}
        lines += [
            f"{backend}: running, pid {found.pid}, up {_duration(time.time() - info['started'])},"
            f" {activity}, {info.get('jobs', 0)} jobs served for {len(served)} workspaces",
            "  toolchain: " + ("matches this environment" if matches else
                               "differs from this environment; the next build restarts it"),
            *(f"  workspace: {ws} ({jobs} jobs)" + (" <- this one" if ws == str(root) else "")
              for ws, jobs in served.items()),
            f"  socket: {paths.socket}",
            f"  log: {paths.log}",
        ]
    for paths in servers_in(folder) if folder.is_dir() else []:
        if paths.name in names:
            continue
        info = read_info(paths) or {}
        lines.append(f"another environment's {paths.backend} server: pid {info.get('pid', '?')},"
                     f" {info.get('executable', '?')}"
                     + (f", PYTHONPATH={info['pythonpath']}" if info.get("pythonpath") else ""))
    return lines


def stop_lines() -> list[str]:
    """Stop this environment's servers; one line per server stopped or cleaned up.

    Other workspaces of the environment share them: their running jobs end
    and their builds go on with per-build workers.
    """
    if not runtime_dir().is_dir():
        return ["no export server is running"]
    lines = []
    for backend in BACKENDS:
        pid = server_client.stop(shared_paths(backend))
        if pid is not None:
            lines.append(f"stopped the {backend} export server (pid {pid}), shared by every "
                         "workspace of this environment")
    return lines or ["no export server is running"]


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
