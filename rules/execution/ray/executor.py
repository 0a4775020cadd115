"""The build's side of remote execution: run an action on the cluster, or say "build it here".

run() returns the action's JobResult, as a local worker would, or None when
the action should be built locally instead. Whatever goes wrong with the
cluster (unreachable, no node with the resources, a node dies and Ray's
retries run out, a node refuses another toolchain, an output fails its
digest) costs a warning and a local build, never a failed build; only the
action's own failure (the factory raises, the parity check fails) fails the
target, with the message and traceback a local build would show, and is not
retried. With ray_toolchain_mismatch = "error", a refusal fails the target.

Outputs arrive as bytes with the digests the node computed; each file is
re-hashed while it is written into the staging path, so nothing unverified
reaches the cache or artifacts/. The build's own path then runs as after a
local export: its post-run key check (inputs changed -> published, not
cached), the cache, remote upload, publishing.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rules.core.errors import CacheError
from rules.core.frozen import thaw
from rules.core.fsio import discard, write_json
from rules.core.hashing import canonical_json
from rules.execution.protocol import JobRequest, JobResult
from rules.execution.ray import node as node_side
from rules.execution.ray.blobs import BlobUploads
from rules.execution.ray.config import (
    NAMESPACE,
    RayConfig,
    demands,
    fits,
    task_options,
    unreachable,
)
from rules.execution.ray.outputs import replay, unpack
from rules.execution.ray.wire import NodeReport, RemoteAction, fingerprint

# How long one wait for a task lasts before the loop looks around: whether the
# build is being interrupted, whether some node could still run the task.
POLL = 0.5
PLACEMENT_CHECK = 5.0
NODES_TTL = 2.0
REPORT_FILE = "last-build.json"


class RayExecutor:
    """One build's use of a Ray cluster. Thread-safe: `doit -n N` runs N actions at once."""

    def __init__(
        self,
        root: Path,
        state: Path,
        config: RayConfig,
        notice: Callable[[str], None],
        log: Callable[[str, str], None],
    ) -> None:
        self._root = root
        self._report_path = state / "ray" / REPORT_FILE
        self._config = config
        self._notice = notice
        self._log = log
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._connected: bool | None = None
        self._connected_at = 0.0
        self._task: Any = None
        self._blobs: BlobUploads | None = None
        self._in_flight: set[Any] = set()
        self._nodes: tuple[float, list[Mapping[str, float]]] = (0.0, [])
        self._said: set[str] = set()
        self._counts: Counter[str] = Counter()
        self._by_node: Counter[str] = Counter()
        self._timings: list[dict[str, float]] = []
        self._bytes_out = 0
        self._closed = False

    # -- one action -------------------------------------------------------------

    def run(
        self, request: JobRequest, key_inputs: Mapping[str, Any], resources: Mapping[str, Any]
    ) -> JobResult | None:
        """The action's result from the cluster, or None to build it locally."""
        label = request.job.label
        if not self._connect():
            return self._local("cluster unavailable")
        options = task_options(resources)
        if not self._placeable(label, options):
            return self._local("no node has the resources")
        assert self._blobs is not None
        try:
            paths, refs = self._blobs.refs({**key_inputs["files"], **key_inputs["code"]})
        except OSError:
            # Built locally, where the same read fails against the target.
            return self._local("an input is unreadable")
        tools = {**key_inputs.get("third_party", {}), **key_inputs.get("format_tools", {})}
        action = RemoteAction(
            label=label,
            job=request.job.to_wire(),
            inputs=tuple(sorted(paths.items())),
            toolchain=dict(key_inputs["toolchain"]),
            tools=tuple(sorted(tools.items())),
            rules_keras=str(key_inputs["rules_keras"]),
            out_name=Path(request.out).name,
            env_id=self._config.env_id,
            idle_timeout=self._config.idle_timeout,
        )
        submitted = time.perf_counter()
        report = self._execute(action, refs, options)
        # A lost export process is the node failing, not the action: when a
        # node is killed its task can report the lost child before Ray sees
        # the node die. Like Bazel's remote execution, retry on the cluster
        # (Ray places it on a live node) before building locally.
        for _ in range(self._config.max_retries):
            if not (isinstance(report, NodeReport) and report.status == "lost"):
                break
            self._notice(f"{label}: {report.reason} on Ray node {report.node.short()}; "
                         "retrying on the cluster")
            report = self._execute(action, refs, options)
        if isinstance(report, JobResult):
            return report
        if report is None:
            return self._local("the cluster failed")
        result = self._accept(report, action, Path(request.out), request.log)
        if result is not None and result.ok:
            finished = time.perf_counter()
            with self._lock:
                self._timings.append({**(report.timings or {}), "total": finished - submitted,
                                      "end": finished - self._connected_at})
        return result

    def _execute(
        self, action: RemoteAction, refs: Mapping[str, Any], options: Mapping[str, Any]
    ) -> NodeReport | JobResult | None:
        """Submit the task and wait for its report; None when the cluster failed us."""
        import ray

        ref = self._task.options(
            **options, max_retries=self._config.max_retries, retry_exceptions=False
        ).remote(action, refs)
        with self._lock:
            self._in_flight.add(ref)
        checked = time.monotonic()
        try:
            while True:
                if self._closed or not threading.main_thread().is_alive():
                    # The build is ending (Ctrl-C under `doit -n`: only the
                    # main thread sees the KeyboardInterrupt).
                    ray.cancel(ref, force=True)
                    return JobResult.failure("Interrupted", "the build was interrupted; the "
                                             "action was cancelled on the cluster")
                ready, _ = ray.wait([ref], timeout=POLL)
                if ready:
                    report: NodeReport = ray.get(ref)
                    return report
                if time.monotonic() - checked > PLACEMENT_CHECK:
                    checked = time.monotonic()
                    if not self._placeable(action.label, options):
                        ray.cancel(ref, force=True)
                        return None
        except ray.exceptions.RuntimeEnvSetupError as err:
            # Every action would fail the same way: stop using the cluster.
            with self._connect_lock:
                self._connected = False
            self._say_once("runtime_env", f"warning: the Ray cluster cannot set up "
                           f"ray_runtime_env ({_first_line(err)}); building locally")
            return None
        except Exception as err:
            self._warn(f"the Ray cluster failed to build {action.label} ({_first_line(err)}); "
                       "building it locally")
            return None
        except BaseException:
            ray.cancel(ref, force=True)
            raise
        finally:
            with self._lock:
                self._in_flight.discard(ref)

    def _accept(self, report: NodeReport, action: RemoteAction, staged: Path,
                log: str = "") -> JobResult | None:
        if report.status == "refused":
            return self._refused(report, action)
        if report.status == "lost":
            self._warn(f"{action.label}: {report.reason} on Ray node {report.node.short()}; "
                       "building it locally")
            return self._local("the export process died")
        assert report.result is not None
        replay(report, log)
        result = JobResult.from_wire(report.result)
        if not result.ok:
            self._count("failed")
            # The user's own error: the message and traceback of a local
            # build, with the node's folder shown as the workspace.
            return JobResult.failure(result.error_kind, self._here(result.message, report),
                                     self._here(result.details, report))
        try:
            unpack(report, staged)
        except (ValueError, OSError, CacheError) as err:
            discard(staged)
            self._warn(f"{action.label}: the output from Ray node {report.node.short()} failed "
                       f"its check ({err}); building it locally")
            return self._local("an output failed its digest")
        with self._lock:
            self._counts["ray"] += 1
            self._by_node[report.node.short()] += 1
            self._bytes_out += report.output_bytes
        self._log(action.label, f"ran on Ray node {report.node.short()}")
        record = {**result.record, "executor": "ray", "node": report.node.to_json()}
        return JobResult(True, record)

    def _refused(self, report: NodeReport, action: RemoteAction) -> JobResult | None:
        node_toolchain = report.node_toolchain or {}
        why = (f"Ray node {report.node.short()} refused {action.label}: its toolchain differs "
               f"from this build's (fingerprint {fingerprint(action.toolchain)} here, "
               f"{fingerprint(node_toolchain)} on the node): " + "; ".join(report.differences))
        if self._config.on_mismatch == "error":
            self._count("refused")
            return JobResult.failure(
                "ToolchainMismatch",
                why + ". Make the nodes match (ray_runtime_env), or set "
                'ray_toolchain_mismatch = "local" to build such actions here',
            )
        self._say_once("toolchain", f"warning: {why}. Such actions are built locally "
                       '(ray_toolchain_mismatch = "error" makes this an error)')
        return self._local("refused: toolchain differs")

    # -- the cluster ------------------------------------------------------------

    def _connect(self) -> bool:
        """Connect once per build; a cluster that does not answer costs one warning."""
        with self._connect_lock:
            if self._connected is not None:
                return self._connected
            self._connected = False
            address = self._config.address
            problem = unreachable(address, self._config.connect_timeout)
            if problem:
                self._warn(f"the Ray cluster at {address} is unreachable ({problem}); "
                           "building locally")
                return False
            try:
                import ray
            except ImportError:
                self._warn("executor = 'ray' needs the ray package (pip install "
                           "'rules-keras[ray]'); building locally")
                return False
            try:
                # Ray's own logging only for errors: the build reports what
                # matters itself, and the nodes' logs stay on the nodes (what
                # a job prints comes back with its result).
                if not ray.is_initialized():  # one connection per process
                    ray.init(address=address, namespace=NAMESPACE,
                             runtime_env=thaw(self._config.runtime_env) or None,
                             log_to_driver=False, logging_level=logging.ERROR)
                nodes = self._alive_nodes(refresh=True)
            except Exception as err:
                self._warn(f"cannot use the Ray cluster at {address} ({_first_line(err)}); "
                           "building locally")
                return False
            # After ray.init's own exit handler, so it runs first: cancel
            # what is in flight while the connection is still up.
            atexit.register(self.close)
            self._task = ray.remote(node_side.run_action)
            self._blobs = BlobUploads(self._root, ray.put)
            cpus = sum(n.get("CPU", 0.0) for n in nodes)
            self._notice(f"running actions on the Ray cluster at {address} "
                         f"({len(nodes)} nodes, {cpus:g} CPUs)")
            self._connected = True
            self._connected_at = time.perf_counter()
            return True

    def _alive_nodes(self, *, refresh: bool = False) -> list[Mapping[str, float]]:
        import ray

        with self._lock:
            when, nodes = self._nodes
        if refresh or time.monotonic() - when > NODES_TTL:
            nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
            with self._lock:
                self._nodes = (time.monotonic(), nodes)
        return nodes

    def _placeable(self, label: str, options: Mapping[str, Any]) -> bool:
        """Whether some live node could run the task; else say so once per need."""
        needs = demands(options)
        try:
            if any(fits(needs, node) for node in self._alive_nodes()):
                return True
        except Exception as err:
            self._warn(f"cannot list the Ray cluster's nodes ({_first_line(err)})")
            return False
        self._say_once(f"resources {canonical_json(needs)}",
                       f"warning: no live node of the Ray cluster has {needs}; building "
                       f"{label} locally, and any other action that needs as much")
        return False

    # -- bookkeeping -------------------------------------------------------------

    def _local(self, why: str) -> JobResult | None:
        """None, the answer that builds the action locally; counted by why."""
        self._count(f"local: {why}")
        return None

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    def _say_once(self, topic: str, message: str) -> None:
        with self._lock:
            if topic in self._said:
                return
            self._said.add(topic)
        self._notice(message)

    def _warn(self, message: str) -> None:
        self._notice(f"warning: {message}")

    def _here(self, text: str, report: NodeReport) -> str:
        if not report.root:
            return text
        return text.replace(report.root + os.sep, str(self._root) + os.sep)

    def report(self) -> dict[str, Any]:
        """What this build did on the cluster: counts, uploads, bytes, timings."""
        with self._lock:
            return {
                "address": self._config.address,
                "connected": bool(self._connected),
                "counts": dict(self._counts),
                "nodes": dict(self._by_node),
                "uploads": self._blobs.report() if self._blobs else {},
                "bytes_uploaded": self._blobs.bytes_put if self._blobs else 0,
                "bytes_returned": self._bytes_out,
                "timings": list(self._timings),
            }

    def close(self) -> None:
        """Cancel what is still in flight, and write this build's report; runs once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            in_flight = list(self._in_flight)
        if in_flight:
            import ray

            for ref in in_flight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # the connection may be gone already
                    break
        if self._connected is None:
            return
        report = self.report()
        try:
            write_json(self._report_path, report, durable=False)
        except OSError:
            pass
        counts = report["counts"]
        local = sum(n for what, n in counts.items() if what.startswith("local"))
        # Not connected: the one warning said it all.
        if self._connected and (counts.get("ray") or local):
            uploads = report["uploads"]
            self._notice(
                f"ray: {counts.get('ray', 0)} actions ran on the cluster, {local} were built "
                f"locally; {len(uploads)} input blobs ({report['bytes_uploaded']} bytes) were "
                f"uploaded, each once"
            )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
