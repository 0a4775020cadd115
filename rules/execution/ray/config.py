"""How a build reaches its Ray cluster, and a target's resources as Ray scheduling options."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rules.core.frozen import FrozenMap, thaw
from rules.core.hashing import sha256_json

MismatchPolicy = Literal["local", "error"]
# The Ray namespace of the node keepers: one per node, backend and runtime
# environment, found again by name by the next build.
NAMESPACE = "rules_keras"
# Resource names a target may use that are not custom resources; each maps to
# the Ray option of the same name.
BUILTIN_RESOURCES = ("num_cpus", "num_gpus", "memory")
# A node that dies mid-action makes Ray run it again elsewhere this many times
# (system failures only); after that the client builds it locally.
MAX_RETRIES = 2
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class RayConfig:
    """The Ray settings of one build (executor = "ray").

    `address` is what ray.init takes: "host:port" of the head's GCS,
    "ray://host:port" for Ray Client, or "auto" (a cluster `ray start` runs on
    this machine). `runtime_env` is Ray's own runtime_env (pip, env_vars,
    container...): how the nodes get the toolchain. `idle_timeout` is how long a
    node's export server stays warm without work.
    """

    address: str = "auto"
    runtime_env: FrozenMap = field(default_factory=FrozenMap)
    on_mismatch: MismatchPolicy = "local"
    idle_timeout: float = 900.0
    max_retries: int = MAX_RETRIES
    connect_timeout: float = CONNECT_TIMEOUT

    @property
    def env_id(self) -> str:
        """Names the runtime environment: two builds with different ones get different keepers."""
        return sha256_json(thaw(self.runtime_env))[:16]


def task_options(resources: Mapping[str, Any]) -> dict[str, Any]:
    """Ray's task options for a target's `resources` (checked when BUILD.py loaded).

    num_cpus, num_gpus and memory (bytes) are Ray options of the same names;
    every other name is a custom resource. With none, Ray's default applies:
    one CPU per action.
    """
    options: dict[str, Any] = {}
    custom: dict[str, float] = {}
    for name, value in resources.items():
        if name in BUILTIN_RESOURCES:
            options[name] = value
        else:
            custom[name] = float(value)
    if custom:
        options["resources"] = custom
    return options


def demands(options: Mapping[str, Any]) -> dict[str, float]:
    """What a task with these options needs from one node, in the names nodes report."""
    needs = {"CPU": float(options.get("num_cpus", 1))}
    if options.get("num_gpus"):
        needs["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        needs["memory"] = float(options["memory"])
    needs.update(options.get("resources", {}))
    return {name: amount for name, amount in needs.items() if amount > 0}


def fits(needs: Mapping[str, float], total: Mapping[str, float]) -> bool:
    """Whether a node with these total resources could ever run the task."""
    return all(total.get(name, 0.0) >= amount for name, amount in needs.items())


def unreachable(address: str, timeout: float) -> str:
    """Why the cluster's address does not answer a TCP connection; "" if it does.

    ray.init retries an address that does not answer for minutes; a build
    must instead warn once and go on locally. "auto" is left to Ray, which
    fails at once when it finds no cluster on this machine.
    """
    target = address.removeprefix("ray://")
    if target in ("", "auto", "local"):
        return ""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return f"expected host:port or ray://host:port. Received: {address!r}"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return ""
    except OSError as err:
        return f"{type(err).__name__}: {err}"
