"""The task that runs one action on a node: check, materialise, run warm, return by digest.

Runs in a Ray worker process on whichever node Ray chose. In order:

1. The node's keeper (rules.execution.ray.keeper) compares the action's
   toolchain with the node's; a difference is a refusal, reported before a
   single blob is fetched.
2. Exactly the declared inputs are written into a fresh folder, fetched from
   the object store by digest and re-hashed: nothing is read from whatever
   checkout the node may have, so an input the action does not declare is
   missing here, as in a Bazel sandbox.
3. The job runs in a fresh child of the node's warm export server, with that
   folder as its working directory and first on sys.path. Its stdout and
   stderr are captured and sent back, so the build shows them as a local
   export would.
4. The artifact comes back as files with their sha256; the folder is removed.

Paths come from the client and are checked (no absolute paths, no '..')
before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rules.core.files import ArtifactKind, check_relpath, scan_tree
from rules.core.fsio import discard, remove_abandoned, temp_path, verified, write_atomic
from rules.core.job import job_from_wire
from rules.execution.pool import Worker, worker_env
from rules.execution.protocol import JobRequest, JobResult
from rules.execution.ray.config import NAMESPACE
from rules.execution.ray.keeper import NodeKeeper, Prepared
from rules.execution.ray.wire import NodeInfo, NodeReport, OutputFile, RemoteAction
from rules.execution.server import client as server_client
from rules.execution.server.protocol import server_paths

# Where a node keeps its keepers' state and its action folders, unless the
# node's environment says otherwise.
NODE_DIR_ENV = "RULES_KERAS_RAY_NODE_DIR"
ACTION_TAG = "action"
# Output a job printed beyond this is cut (the start is kept).
OUTPUT_LIMIT = 1 << 20


# The keeper as a Ray actor class, made once per worker process.
_keeper_class: Any = None


class NodeError(RuntimeError):
    """The node could not run the action (its export server would not take it)."""


def node_dir() -> Path:
    configured = os.environ.get(NODE_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"rules_keras-ray-{os.getuid()}"


def this_node() -> NodeInfo:
    import ray

    return NodeInfo(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(),
                    socket.gethostname())


def run_action(action: RemoteAction, blobs: Mapping[str, Any]) -> NodeReport:
    """The Ray task: `blobs` maps each input digest to its ObjectRef (fetched only if accepted)."""
    import ray

    node = this_node()
    base = node_dir() / node.id[:16]
    prepared = _prepare(action, node, base)
    if prepared.differences:
        return _refused(node, prepared)
    actions = base / "actions"
    actions.mkdir(parents=True, exist_ok=True)
    remove_abandoned(actions, [ACTION_TAG])
    folder = temp_path(actions / "job", ACTION_TAG)
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        workspace, out = folder / "ws", folder / "out" / action.out_name
        digests = sorted({digest for _, digest in action.inputs})
        contents = dict(zip(digests, ray.get([blobs[d] for d in digests]), strict=True))
        materialise(workspace, action.inputs, contents)
        out.parent.mkdir(parents=True)
        timings["materialise"] = time.perf_counter() - started
        started = time.perf_counter()
        request = JobRequest(job_from_wire(action.job), str(out))
        with _captured(folder) as (stdout, stderr):
            if ray.get_gpu_ids():
                outcome = run_fresh(action, node, request, workspace)
            else:
                outcome = _run(action, node, base, prepared, request, workspace)
        timings["run"] = time.perf_counter() - started
        printed, errors = _read(stdout), _read(stderr)
        if isinstance(outcome, NodeReport):
            return dataclasses.replace(outcome, stdout=printed, stderr=errors)
        started = time.perf_counter()
        kind, files, dirs = collect(out) if outcome.ok else ("directory", (), ())
        timings["collect"] = time.perf_counter() - started
        return NodeReport("done", node, outcome.to_wire(), kind, files, dirs, str(workspace),
                          stdout=printed, stderr=errors, timings=timings)
    finally:
        discard(folder)


def _refused(node: NodeInfo, prepared: Prepared) -> NodeReport:
    return NodeReport("refused", node, differences=prepared.differences,
                      node_toolchain=prepared.toolchain)


def _prepare(action: RemoteAction, node: NodeInfo, base: Path) -> Prepared:
    """Ask this node's keeper; a keeper that just ended is replaced once."""
    import ray

    for attempt in range(2):
        keeper = _keeper(action, node, base)
        try:
            prepared: Prepared = ray.get(keeper.prepare.remote(
                action.toolchain, action.tools, action.rules_keras, action.idle_timeout))
            return prepared
        except ray.exceptions.RayActorError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _keeper(action: RemoteAction, node: NodeInfo, base: Path) -> Any:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    global _keeper_class
    if _keeper_class is None:
        _keeper_class = ray.remote(NodeKeeper)
    name = f"keeper-{node.id[:16]}-{action.backend}-{action.env_id}"
    state = base / f"{action.backend}-{action.env_id}"
    return _keeper_class.options(
        name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        num_cpus=0, max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False),
    ).remote(str(state), action.backend)


def _run(action: RemoteAction, node: NodeInfo, base: Path, prepared: Prepared,
         request: JobRequest, workspace: Path) -> JobResult | NodeReport:
    """The job's result from the node's export server; a server that retired is replaced once."""
    env = worker_env(action.backend)
    for attempt in range(2):
        paths = server_paths(Path(prepared.state), action.backend)
        try:
            return server_client.run(paths, workspace, prepared.fingerprint,
                                     action.idle_timeout, request, env)
        except (server_client.ServerRefused, server_client.ServerUnavailable) as err:
            # It idled out or retired between prepare() and now: nothing ran.
            if attempt:
                raise NodeError(f"the node's export server did not take the job: {err}") from err
            prepared = _prepare(action, node, base)
            if prepared.differences:
                return _refused(node, prepared)
        except server_client.ServerLost as err:
            server_client.kill_export(err.child)
            return NodeReport("lost", node, reason=str(err))
    raise AssertionError("unreachable")


def run_fresh(action: RemoteAction, node: NodeInfo, request: JobRequest,
              workspace: Path) -> JobResult | NodeReport:
    """The job in a worker process of its own: for a task that holds GPUs.

    A child of the warm server sees the devices the server saw when it
    started (CUDA_VISIBLE_DEVICES is read once per process, and a spare's
    warm-up reads it before any job arrives); a fresh process sees the ones
    Ray gave this task. An export that needs a GPU takes long enough that the
    backend's import is a small part of it.
    """
    worker = Worker(workspace, action.backend, worker_env(action.backend))
    try:
        result = worker.run(request)
    finally:
        worker.close()
    if result.error_kind == "WorkerCrashed":
        return NodeReport("lost", node, reason=result.message)
    return result


def materialise(
    workspace: Path, inputs: tuple[tuple[str, str], ...], contents: Mapping[str, bytes]
) -> None:
    """Write every input at its path, checking each blob against its digest."""
    workspace.mkdir(parents=True)
    for path, digest in inputs:
        dest = workspace / check_relpath(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = contents[digest]
        write_atomic(dest, verified([data], digest, len(data), path), durable=False)


def collect(out: Path) -> tuple[ArtifactKind, tuple[OutputFile, ...], tuple[str, ...]]:
    """The artifact at `out` as files with their digests (and its empty folders)."""
    entries, dirs = scan_tree(out)
    kind: ArtifactKind = "file" if out.is_file() else "directory"
    files = []
    for entry in entries:
        path = out if kind == "file" else out / entry.path
        files.append(OutputFile(entry.path, entry.sha256, entry.mode, path.read_bytes()))
    return kind, tuple(files), dirs


@contextlib.contextmanager
def _captured(folder: Path) -> Iterator[tuple[Path, Path]]:
    """Point this process's stdout and stderr at files while the job runs.

    The export server gives its child the caller's descriptors 1 and 2; here
    they are a Ray worker's log files, which the build would never show. A
    task has the worker to itself, so swapping them for the call is safe.
    """
    paths = folder / "stdout", folder / "stderr"
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        for fd, path in zip((1, 2), paths, strict=True):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        yield paths
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(OUTPUT_LIMIT)
    except OSError:
        return b""
