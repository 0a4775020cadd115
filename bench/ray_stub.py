"""Stub-fast remote actions for bench_ray.py: the cluster answers at once, so the client shows.

Importing this module replaces the node's task body (rules.execution.ray.node
.run_action) in this process, before the executor connects and wraps it. The
stub still does what costs the cluster per action besides the export: it
fetches every input blob from the object store and re-hashes it, and returns
a one-file artifact with its digest, which the client verifies, stores in its
cache and publishes as usual. Ray pickles the stub by value, so the nodes need
not have bench/ on their path.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from typing import Any

import ray
import ray.cloudpickle

from rules.execution.protocol import JobResult
from rules.execution.ray import node
from rules.execution.ray.wire import NodeReport, OutputFile, RemoteAction


def stub_run_action(action: RemoteAction, blobs: Mapping[str, Any]) -> NodeReport:
    digests = sorted({digest for _, digest in action.inputs})
    for digest, data in zip(digests, ray.get([blobs[d] for d in digests]), strict=True):
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"blob {digest[:12]} does not match its digest")
    payload = f"stub artifact of {action.label}\n".encode()
    artifact = OutputFile("stub.txt", hashlib.sha256(payload).hexdigest(), 0o644, payload)
    result = JobResult(True, {"stub": True, "seconds": 0.0})
    return NodeReport("done", node.this_node(), result.to_wire(), "directory", (artifact,))


def install() -> None:
    """Make every action this process sends to the cluster a stub action."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    node.run_action = stub_run_action  # type: ignore[assignment]
