"""A real two-node Ray cluster in a private network namespace, for the Ray tests and bench.

Ray advertises the address it finds for the machine; inside a namespace made
here, whose only interface is loopback, that is 127.0.0.1, so no cluster
traffic leaves it. Each node is its own `ray start --block` process with its
own --temp-dir, started in a new session: stopping a node (or killing it with
-9 to test a node failure) signals exactly that process group. `ray stop` is
never used: it ends every Ray process on the machine, other people's too.
The `doit` of a test runs inside the same namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import NginxServer

PORT = 6379
# Ray's minimum is 75 MB; the tests move kilobytes.
OBJECT_STORE_BYTES = 100 * 1024 * 1024
START_TIMEOUT = 120.0
DOIT_TIMEOUT = 900
RAY = str(Path(sys.executable).with_name("ray"))
# A dead node is noticed after period x threshold (defaults: 5 s x 5); the
# node-failure test should not wait half a minute for it.
HEAD_ENV = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


class ClusterError(RuntimeError):
    """The test cluster could not be started."""


def netns_available() -> bool:
    """Whether this process may create network namespaces (root with iproute2)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


@dataclass
class Node:
    name: str
    process: subprocess.Popen[bytes]
    temp_dir: Path
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class RayCluster:
    """A head and a second node ("b", with the custom resource node_b) on 127.0.0.1."""

    base: Path
    env: Mapping[str, str] = field(default_factory=dict)
    head_cpus: int = 1
    b_cpus: int = 1
    namespace: str = ""
    nodes: dict[str, Node] = field(default_factory=dict)
    _short: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{PORT}"

    @property
    def node_dir(self) -> Path:
        """Where the nodes keep their export servers and action folders."""
        return self.base / "nodes"

    def start(self) -> RayCluster:
        self.namespace = f"rk-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}"
        _run(["ip", "netns", "add", self.namespace])
        try:
            _run(["ip", "netns", "exec", self.namespace, "ip", "link", "set", "lo", "up"])
            # Ray's socket paths must fit in 107 bytes: pytest's tmp paths do not.
            self._short = Path(tempfile.mkdtemp(prefix="rk-", dir="/tmp"))
            self.node_dir.mkdir(parents=True, exist_ok=True)
            self._start_node("head", ["--head", f"--port={PORT}", f"--num-cpus={self.head_cpus}",
                                      "--include-dashboard=false"], HEAD_ENV)
            self._start_node("b", [f"--address={self.address}", f"--num-cpus={self.b_cpus}",
                                   '--resources={"node_b": 1}'], {"RK_TEST_NODE": "b"})
            self.wait_for_nodes(2)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, name: str, args: list[str], extra: Mapping[str, str]) -> None:
        assert self._short is not None
        temp = self._short / name
        log = self.base / f"{name}.log"
        env = {**os.environ, **self.env, **extra,
               "RULES_KERAS_RAY_NODE_DIR": str(self.node_dir)}
        with open(log, "ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, RAY, "start", "--block",
                 "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
                 f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats", *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
        self.nodes[name] = Node(name, process, temp, log)
        deadline = time.monotonic() + START_TIMEOUT
        while b"Ray runtime started" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"ray node {name} did not start:\n{_tail(log)}")
            time.sleep(0.2)

    def wait_for_nodes(self, count: int, timeout: float = START_TIMEOUT) -> None:
        """Until the cluster reports `count` alive nodes."""
        script = (f"import ray; ray.init(address={self.address!r}, logging_level='ERROR', "
                  "log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))")
        deadline = time.monotonic() + timeout
        found = ""
        while time.monotonic() < deadline:
            result = self.run([sys.executable, "-c", script], timeout=120)
            lines = result.stdout.strip().splitlines()
            found = lines[-1] if lines else ""
            if result.returncode == 0 and found == str(count):
                return
            time.sleep(1.0)
        raise ClusterError(f"expected {count} alive Ray nodes, found {found!r}")

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: Path | None = None, timeout: float = DOIT_TIMEOUT,
            ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the cluster's network namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv], cwd=cwd,
            env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
        )

    def popen(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *argv], cwd=cwd,
            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )

    def kill_node(self, name: str) -> None:
        """kill -9 every process of one node, as a machine that loses power."""
        node = self.nodes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop the nodes this cluster started (by their process groups), then the namespace."""
        for node in reversed(list(self.nodes.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGTERM)
        for node in self.nodes.values():
            try:
                node.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            # `ray start --block` may exit before the processes it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=15)
        _stop_export_servers(self.node_dir)
        if self.namespace:
            subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
        if self._short is not None:
            shutil.rmtree(self._short, ignore_errors=True)


class NamespacedNginx(NginxServer):
    """The tests' nginx (a Bazel HTTP cache), started inside a cluster's namespace."""

    def __init__(self, cluster: RayCluster, prefix: Path) -> None:
        prefix.mkdir(parents=True)
        super().__init__(prefix)
        self.cluster = cluster

    def start(self) -> None:
        log = open(self.prefix / "stderr.log", "ab")  # noqa: SIM115 - owned by the child
        self._process = subprocess.Popen(
            ["ip", "netns", "exec", self.cluster.namespace, self.binary, "-p", str(self.prefix),
             "-c", str(self.prefix / "nginx.conf"), "-e", str(self.prefix / "error.log"),
             "-g", "daemon off;"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        probe = f"import socket; socket.create_connection(('127.0.0.1', {self.port}), 1).close()"
        deadline = time.monotonic() + 20
        while self.cluster.run([sys.executable, "-c", probe], timeout=30).returncode != 0:
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"nginx did not start in the namespace:\n{self.errors()}")
            time.sleep(0.1)


def _stop_export_servers(node_dir: Path) -> None:
    """The nodes' export servers run in their own sessions: stop them by their files."""
    from rules.core.backends import BACKENDS
    from rules.execution.server import client as server_client
    from rules.execution.server.protocol import server_paths

    for folder in node_dir.glob("**/server/"):
        for backend in BACKENDS:
            with contextlib.suppress(Exception):
                server_client.stop(server_paths(folder.parent, backend, create=False))


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
