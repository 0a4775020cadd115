"""Remote execution on Ray: per-action overhead, transfer cost, scale model, the client's limit.

    sudo python bench/bench_ray.py [--actions 12] [--stub-actions 200] [--inflight 1,2,4,8,16,32]
                                   [--sizes 1,8,32] [--runs 3] [--settle 4] [--json PATH]
                                   [--keep DIR] [--smoke]

Needs root: it starts a two-node Ray cluster (each node 8 logical CPUs) in a
private network namespace (tests/ray_cluster.py) and runs every client inside
it, so all traffic stays on loopback. On one 2-core machine a cluster cannot
beat a local build; what is measured is what decides the answer at scale:

1. overhead: K small exports from bench/workspace_gen.py, each run through
   the local warm export server (WorkerPool.run: the baseline) and through
   the cluster (RayExecutor.run), alternating which goes first, after two
   warm-up actions on each, with --settle seconds of quiet before each (both
   servers then have a warmed spare child ready, as in a rebuild). Per-action
   overhead = median(cluster) - median(local), and the median of the paired
   differences; with the node's own split and the remote path's own cost
   (the client's wall time minus the job's round trip to the node's server).
2. transfer: a blob of S MB from the client to the other node through the
   object store (ray.put + a task there that fetches and hashes it), S MB
   back (a task returning it), and the remote-cache alternative (HTTP PUT to
   nginx, GET back, loopback); seconds per MB after an empty round trip.
3. client limit: M stub-fast targets (bench/ray_stub.py: the node fetches and
   hashes the inputs and returns a one-file artifact, no export) built by the
   real `doit -n N` for each N, from empty cache and artifacts: actions per
   second; and the same M actions through RayExecutor.run from N threads
   (no doit, no key, no cache, no publishing), which isolates Ray's share.
4. the model of scale: the formula, its measured inputs, and its predictions
   for 500 models on 1, 10 and 50 nodes.

The client phases run in bench/ray_phases.py, inside the namespace.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]

from workspace_gen import generate, subprocess_env  # noqa: E402

SMOKE = {"actions": 3, "stub_actions": 20, "inflight": "1,4", "sizes": "1", "runs": 1}
MODELS = 500
NODES = (1, 10, 50)
SLOTS = (1, 4)
REAL_EXPORT_S = 30.0
STUB_DODO = f'''"""Benchmark workspace whose actions are stubs on the cluster (ray_stub.py)."""
import sys
from pathlib import Path
sys.path.insert(0, {str(BENCH)!r})
import ray_stub
ray_stub.install()
import rules
workspace = rules.Workspace(Path(__file__).resolve().parent)
DOIT_CONFIG = workspace.doit_config()
'''


def _log(message: str) -> None:
    print(f"[bench_ray] {message}", file=sys.stderr, flush=True)


# -- outside: the cluster, the workspaces, the report ---------------------------------------


def _inner(cluster: Any, phase: str, args: dict[str, Any], env: dict[str, str]) -> Any:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    result = cluster.run([sys.executable, str(BENCH / "ray_phases.py"), phase,
                          json.dumps(args), str(out)],
                         env={**subprocess_env(), **env}, cwd=REPO, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")
    data = json.loads(out.read_text())
    out.unlink()
    return data


def _ray_env(cluster: Any, ws: Path, cache: Path) -> dict[str, str]:
    return {"RULES_KERAS_EXECUTOR": "ray", "RULES_KERAS_RAY_ADDRESS": cluster.address,
            "RULES_KERAS_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}


def stub_doit(cluster: Any, ws: Path, inflight: list[int], m: int) -> dict[str, Any]:
    rows = []
    for n in inflight:
        for path in (ws / "artifacts", ws / ".rules_keras"):
            shutil.rmtree(path, ignore_errors=True)
        cache = Path(tempfile.mkdtemp(prefix="bench-stub-cache-"))
        env = {**subprocess_env(), **_ray_env(cluster, ws, cache), "RULES_KERAS_SERVER": "0"}
        started = time.perf_counter()
        proc = cluster.run([sys.executable, "-m", "doit", "-n", str(n), "export"], cwd=ws, env=env)
        wall = time.perf_counter() - started
        if proc.returncode != 0 or f"{m} built" not in proc.stdout:
            raise RuntimeError(f"stub build -n {n} failed:\n{proc.stdout[-2000:]}"
                               f"{proc.stderr[-2000:]}")
        started = time.perf_counter()
        noop = cluster.run([sys.executable, "-m", "doit", "-n", str(n), "export"], cwd=ws, env=env)
        noop_s = time.perf_counter() - started
        if f"{m} up to date" not in noop.stdout:
            raise RuntimeError(f"no-op after -n {n} did not find {m} up to date")
        # Steady state: after the first tenth of the actions, by when each finished
        # (the build's start, loading, Ray's worker processes starting, left out).
        ends = sorted(t["end"] for t in json.loads(
            (ws / ".rules_keras/ray/last-build.json").read_text())["timings"])
        first = len(ends) // 10
        steady = (len(ends) - 1 - first) / (ends[-1] - ends[first])
        rows.append({"inflight": n, "seconds": wall, "noop_s": noop_s,
                     "actions_per_s": m / wall, "actions_per_s_steady": steady})
        shutil.rmtree(cache, ignore_errors=True)
        _log(f"stub doit -n {n}: {m / wall:.1f} actions/s, {steady:.1f} steady "
             f"({wall:.1f}s, no-op {noop_s:.1f}s)")
    return {"rows": rows}


def scale_model(results: dict[str, Any]) -> dict[str, Any]:
    """wall(n) = t0 + max(M / R, ceil(M / (n * s)) * (te + o + W * m))."""
    over = results["overhead"]
    local = statistics.median(r["local"] for r in over["rows"])
    # The paired difference, but never less than what the remote path itself
    # costs (a node's export can come out faster than the local one by chance).
    overhead = max(statistics.median(r["ray"] - r["local"] for r in over["rows"]),
                   statistics.median(t["total"] - t["run"] for t in over["timings"]))
    weights_mb = statistics.median(
        u["size"] for u in over["uploads"].values() if u["size"] > 4096) / 2**20
    per_mb = max(r["object_store_up_s"] / r["mb"] for r in results["transfer"]["rows"])
    rate = max(r["actions_per_s_steady"] for r in results["stub_doit"]["rows"])
    t0 = results["connect_and_import_s"]
    inputs = {"M": MODELS, "t0_s": t0, "o_s": overhead, "R_actions_per_s": rate,
              "m_s_per_mb": per_mb, "W_mb_small": weights_mb, "te_small_s": local,
              "te_real_s": REAL_EXPORT_S, "W_mb_real": 100.0}
    table = []
    for label, te, w in (("small (measured)", local, weights_mb),
                         ("real (assumed 30 s, 100 MB)", REAL_EXPORT_S, 100.0)):
        for s in SLOTS:
            for n in NODES:
                waves = -(-MODELS // (n * s))
                wall = t0 + max(MODELS / rate, waves * (te + overhead + w * per_mb))
                table.append({"model": label, "slots": s, "nodes": n, "wall_s": wall,
                              "client_bound": MODELS / rate > waves * (te + overhead + w * per_mb),
                              "one_machine_s": MODELS * te / s})
    return {"inputs": inputs, "table": table}


def report(results: dict[str, Any]) -> str:
    over = results["overhead"]
    local = [r["local"] for r in over["rows"]]
    ray = [r["ray"] for r in over["rows"]]
    pairs = [r["ray"] - r["local"] for r in over["rows"]]
    # The same difference with each export's own time (measured inside the
    # server's child) taken out: what the remote route adds around the export.
    around = [(r["ray"] - r["ray_job"]) - (r["local"] - r["local_job"]) for r in over["rows"]]
    node = {k: statistics.median(t[k] for t in over["timings"]) for k in over["timings"][0]}
    path = statistics.median(t["total"] - t["run"] for t in over["timings"])
    bytes_in = sum(u["size"] for u in over["uploads"].values()) / max(over["actions"], 1)
    lines = [
        f"## per-action overhead ({len(over['rows'])} small exports, medians)",
        f"local warm server: {statistics.median(local):.3f}s   "
        f"cluster: {statistics.median(ray):.3f}s"
        f"   overhead: {statistics.median(ray) - statistics.median(local):+.3f}s"
        f"   (paired median {statistics.median(pairs):+.3f}s; around the export "
        f"{statistics.median(around):+.3f}s; goal <= 0.150s)",
        f"node side: materialise {node['materialise'] * 1000:.1f}ms, job in the node's server "
        f"{node['run']:.3f}s, collect {node['collect'] * 1000:.1f}ms; "
        f"client total {node['total']:.3f}s; the remote path itself (client total minus the "
        f"job's round trip to the node's server) {path * 1000:.0f}ms",
        f"bytes per action: {bytes_in / 1024:.1f} KiB in, "
        f"{over['bytes_returned'] / max(over['actions'], 1) / 1024:.1f} KiB out",
        "",
        f"## transfer (empty round trip {results['transfer']['empty_round_trip_s'] * 1000:.1f}ms)",
        "| MB | object store up | object store down | remote cache PUT+GET |", "|---|---|---|---|",
    ]
    for r in results["transfer"]["rows"]:
        lines.append(f"| {r['mb']} | {r['object_store_up_s'] / r['mb'] * 1000:.1f} ms/MB | "
                     f"{r['object_store_down_s'] / r['mb'] * 1000:.1f} ms/MB | "
                     f"{r['remote_cache_put_get_s'] / r['mb'] * 1000:.1f} ms/MB |")
    lines += ["", "## client limit (stub-fast actions)", "| in flight | doit: actions/s, whole "
              "build | doit: steady | RayExecutor.run alone |", "|---|---|---|---|"]
    api = {r["inflight"]: r for r in results["stub_api"]["rows"]}
    for r in results["stub_doit"]["rows"]:
        lines.append(f"| {r['inflight']} | {r['actions_per_s']:.1f} | "
                     f"{r['actions_per_s_steady']:.1f} | "
                     f"{api[r['inflight']]['actions_per_s']:.1f} |")
    model = results["scale"]
    lines += ["", "## model of scale: wall(n) = t0 + max(M / R, ceil(M / (n*s)) * (te + o + W*m))",
              "inputs: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in model["inputs"].items()),
              "| models | slots/node | nodes | predicted wall | bound by | one machine, s slots |",
              "|---|---|---|---|---|---|"]
    for row in model["table"]:
        lines.append(f"| {row['model']} | {row['slots']} | {row['nodes']} | {row['wall_s']:.0f}s | "
                     f"{'client' if row['client_bound'] else 'nodes'} | "
                     f"{row['one_machine_s']:.0f}s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=12)
    parser.add_argument("--stub-actions", type=int, default=200)
    parser.add_argument("--inflight", default="1,2,4,8,16,32")
    parser.add_argument("--sizes", default="1,8,32")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=4.0,
                        help="seconds of quiet before each timed export (spares get ready)")
    parser.add_argument("--json")
    parser.add_argument("--keep")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    from tests.ray_cluster import NamespacedNginx, RayCluster

    base = Path(args.keep or tempfile.mkdtemp(prefix="bench-ray-"))
    base.mkdir(parents=True, exist_ok=True)
    inflight = [int(n) for n in args.inflight.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    _log(f"generating {args.actions + 2} models and {args.stub_actions} stub targets in {base}")
    small = base / "small"
    generate(small, args.actions + 2, base / "spare")
    stub = base / "stub"
    generate(stub, args.stub_actions, base / "spare-stub")
    (stub / "dodo.py").write_text(STUB_DODO)
    cluster = RayCluster(base / "cluster", head_cpus=8, b_cpus=8).start()
    nginx = NamespacedNginx(cluster, base / "nginx")
    results: dict[str, Any] = {}
    try:
        nginx.start()
        started = time.perf_counter()
        connect_script = f"import ray; ray.init(address={cluster.address!r}, logging_level='ERROR')"
        proc = cluster.run([sys.executable, "-c", connect_script], timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        connect = time.perf_counter() - started
        _log("phase 1: overhead")
        env = {**_ray_env(cluster, small, base / "cache-small"), "RULES_KERAS_CACHE": "0"}
        results["overhead"] = _inner(cluster, "overhead", {
            "ws": str(small), "k": args.actions, "settle": args.settle}, env)
        # t0: connecting, plus what a cold node's first action costs beyond a warm one.
        warm = statistics.median(t["total"] for t in results["overhead"]["timings"])
        results["connect_and_import_s"] = connect + results["overhead"]["cold_first_s"] - warm
        _log("phase 2: transfer")
        results["transfer"] = _inner(cluster, "transfer", {
            "address": cluster.address, "sizes": sizes, "runs": args.runs,
            "nginx_port": nginx.port}, {})
        _log("phase 3: client limit")
        results["stub_doit"] = stub_doit(cluster, stub, inflight, args.stub_actions)
        results["stub_api"] = _inner(cluster, "stub_api", {"ws": str(stub), "inflight": inflight},
                                     {**_ray_env(cluster, stub, base / "cache-api"),
                                      "RULES_KERAS_CACHE": "0", "RULES_KERAS_SERVER": "0"})
        results["scale"] = scale_model(results)
    finally:
        nginx.stop()
        cluster.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    text = report(results)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
