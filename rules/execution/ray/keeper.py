"""The node keeper: a Ray actor per node, backend and runtime environment that keeps it warm.

It owns the node's export server for one backend (rules.execution.server,
started and restarted through its client, under a node-local state folder)
and the node's toolchain, read once. Tasks on the same node ask it to
prepare() an action: compare toolchains, make sure the server listens, and
say where. The jobs themselves go from the task to the server over its Unix
socket, so the keeper never carries data and one keeper serves many tasks.

The keeper is detached (it outlives the build, so the next build finds the
backend imported) and reserves no resources. It ends itself once its server
has exited after `idle_timeout` without work and nobody asked for it for as
long again, so a cluster does not collect keepers of runtime environments
that nobody uses any more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rules
from rules.core.toolchain import detect, installed_version
from rules.execution.pool import worker_env
from rules.execution.ray.wire import toolchain_differences
from rules.execution.server import client as server_client
from rules.execution.server.protocol import fingerprint, server_paths

# How often an idle keeper looks whether it may end.
IDLE_CHECK = 30.0


@dataclass(frozen=True)
class Prepared:
    """The keeper's answer: the node's toolchain, and the server to use unless it refused."""

    toolchain: Mapping[str, Any]
    differences: tuple[str, ...]
    state: str = ""
    fingerprint: str = ""
    server_pid: int = 0


class NodeKeeper:
    """Keeps one backend's export server on this node; see the module docstring."""

    def __init__(self, state: str, backend: str) -> None:
        self.state = Path(state)
        self.state.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.toolchain = detect(self.state / "toolchain.json").to_json()
        self.paths = server_paths(self.state, backend)
        self.last_used = time.monotonic()
        self.idle_timeout = 900.0
        self._lock = threading.Lock()
        threading.Thread(target=self._end_when_idle, daemon=True).start()

    def prepare(
        self,
        toolchain: Mapping[str, Any],
        tools: tuple[tuple[str, str], ...],
        rules_keras: str,
        idle_timeout: float,
    ) -> Prepared:
        """Refuse an action built by another toolchain; else make sure the server listens."""
        with self._lock:
            self.last_used = time.monotonic()
            self.idle_timeout = idle_timeout
        differences = toolchain_differences(toolchain, self.toolchain)
        for dist, version in tools:
            have = _version(dist)
            if have != version:
                differences.append(f"{dist}: {version!r} for the action, "
                                   f"{'not installed' if have is None else repr(have)} "
                                   "on the node")
        if rules_keras != rules.__version__:
            differences.append(f"rules_keras: {rules_keras!r} for the action, "
                               f"{rules.__version__!r} on the node")
        if differences:
            return Prepared(self.toolchain, tuple(differences))
        # Computed each time: it stamps the rules_keras sources, which an
        # editable install changes under a long-lived keeper; a server started
        # now must match what its jobs are sent with.
        current = fingerprint(self.backend, self.toolchain)
        _, pid = server_client.ensure_running(
            self.paths, current, idle_timeout, worker_env(self.backend)
        )
        return Prepared(self.toolchain, (), str(self.state), current, pid)

    def stop_server(self) -> int | None:
        """Stop this keeper's export server (its pid, or None); the next prepare() starts one."""
        return server_client.stop(self.paths)

    def _end_when_idle(self) -> None:
        while True:
            time.sleep(IDLE_CHECK)
            # A server that exited when idle is our child: collect it.
            server_client.reap()
            with self._lock:
                idle = time.monotonic() - self.last_used
                limit = 2 * self.idle_timeout
            if idle > limit and server_client.request_status(self.paths, timeout=5.0) is None:
                import ray

                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return


def _version(dist: str) -> str | None:
    return installed_version(dist)
