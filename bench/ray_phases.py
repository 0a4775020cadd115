"""The phases of bench_ray.py that run inside the cluster's network namespace, as a client.

    python bench/ray_phases.py PHASE ARGS_JSON OUT_JSON

Started by bench_ray.py with `ip netns exec`; each writes its measurements
to OUT_JSON. See bench_ray.py for what each measures and why.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]


def inner_overhead(ws: Path, k: int, settle: float) -> dict[str, Any]:
    from rules.build import BuildSession
    from rules.execution.protocol import JobRequest

    session = BuildSession(ws)
    assert session.remote is not None
    staging = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    rows = []
    for i, action in enumerate(a for a in session.graph.actions if a.kind == "keras_export"):
        if i >= k + 2:
            break
        key = session.key(action)
        times = {}
        for where in (("local", "ray") if i % 2 == 0 else ("ray", "local")):
            request = JobRequest(action.job, str(staging / where / str(i) / "serving"))
            Path(request.out).parent.mkdir(parents=True)
            # Both servers idle long enough to have a warmed spare child ready, and
            # nothing else of ours running: a rebuild's situation, the same for both.
            time.sleep(settle)
            started = time.perf_counter()
            result = (session.pool.run(request) if where == "local"
                      else session.remote.run(request, key.inputs, action.resources))
            times[where] = time.perf_counter() - started
            if result is None or not result.ok:
                raise RuntimeError(f"{action.label} failed on {where}: {result}")
            times[f"{where}_job"] = float(result.record.get("seconds", 0.0))
        rows.append(times)
    report = session.remote.report()
    session.close()
    shutil.rmtree(staging, ignore_errors=True)
    # The first action found the node cold: keeper, export server, backend import.
    return {"rows": rows[2:], "timings": report["timings"][2:], "uploads": report["uploads"],
            "cold_first_s": report["timings"][0]["total"],
            "bytes_returned": report["bytes_returned"], "actions": len(report["timings"])}


def inner_transfer(address: str, sizes: list[int], runs: int, nginx_port: int) -> dict[str, Any]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    here = ray.get_runtime_context().get_node_id()
    other = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here)
    there = NodeAffinitySchedulingStrategy(other, soft=False)

    @ray.remote(num_cpus=0)
    def fetch(refs: list[Any]) -> str:
        return hashlib.sha256(ray.get(refs[0])).hexdigest()

    @ray.remote(num_cpus=0)
    def make(size: int) -> bytes:
        return bytes(size)

    def timed(fn: Any) -> float:
        fn()  # the first call may start a worker process
        samples = []
        for _ in range(max(runs, 5)):
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    empty = timed(lambda: ray.get(fetch.options(scheduling_strategy=there).remote(
        [ray.put(b"x")])))
    rows = []
    for mb in sizes:
        data = os.urandom(mb << 20)
        digest = hashlib.sha256(data).hexdigest()
        up = timed(lambda data=data: ray.get(fetch.options(scheduling_strategy=there).remote(
            [ray.put(data)])))
        down = timed(lambda mb=mb: ray.get(make.options(scheduling_strategy=there).remote(
            mb << 20)))
        http = timed(lambda data=data, digest=digest: _http_round_trip(nginx_port, digest, data))
        rows.append({"mb": mb, "object_store_up_s": up - empty, "object_store_down_s": down - empty,
                     "remote_cache_put_get_s": http})
    return {"empty_round_trip_s": empty, "rows": rows}


def _http_round_trip(port: int, digest: str, data: bytes) -> None:
    """What the remote-cache route costs a blob: the client PUTs it, a node GETs it."""
    import base64

    from tests.servers import PASSWORD, USER

    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for method, body in (("PUT", data), ("GET", None)):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request(method, f"/cache/cas/{digest[:2]}/{digest}", body=body,
                     headers={"Authorization": f"Basic {auth}"})
        reply = conn.getresponse()
        got = reply.read()
        if reply.status >= 300 or (method == "GET" and len(got) != len(data)):
            raise RuntimeError(f"{method} to nginx answered {reply.status}")
        conn.close()


def inner_stub_api(ws: Path, inflight: list[int]) -> dict[str, Any]:
    """M stub actions through RayExecutor.run from N threads: Ray's share of the client cost."""
    import ray_stub

    ray_stub.install()
    from rules.build import BuildSession
    from rules.execution.protocol import JobRequest
    from rules.execution.ray.executor import RayExecutor

    session = BuildSession(ws)
    assert session.remote is not None and session.settings.ray is not None
    actions = [a for a in session.graph.actions if a.kind == "keras_export"]
    keys = {a.label: session.key(a) for a in actions}
    rows = []
    for n in inflight:
        executor = RayExecutor(ws, Path(tempfile.mkdtemp()), session.settings.ray,
                               lambda m: None, lambda label, m: None)
        staging = Path(tempfile.mkdtemp(prefix="bench-stub-"))
        executor.run(JobRequest(actions[0].job, str(staging / "warm")),  # connects
                     keys[actions[0].label].inputs, actions[0].resources)

        def one(index: int, executor: RayExecutor = executor, staging: Path = staging) -> None:
            action = actions[index]
            result = executor.run(JobRequest(action.job, str(staging / str(index))),
                                  keys[action.label].inputs, action.resources)
            if result is None or not result.ok:
                raise RuntimeError(f"stub action {action.label} failed: {result}")

        started = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(one, range(len(actions))))
        wall = time.perf_counter() - started
        rows.append({"inflight": n, "seconds": wall, "actions_per_s": len(actions) / wall})
        executor.close()
        shutil.rmtree(staging, ignore_errors=True)
    session.close()
    return {"rows": rows}


def main(argv: list[str]) -> int:
    phase, args, out = argv[1], json.loads(argv[2]), Path(argv[3])
    phases = {
        "overhead": lambda: inner_overhead(Path(args["ws"]), args["k"], args["settle"]),
        "transfer": lambda: inner_transfer(args["address"], args["sizes"], args["runs"],
                                           args["nginx_port"]),
        "stub_api": lambda: inner_stub_api(Path(args["ws"]), args["inflight"]),
    }
    out.write_text(json.dumps(phases[phase]()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
