"""Restore N targets into an empty local cache from BuildGrid (REAPI gRPC) and from nginx (HTTP).

In one run, on a generated workspace of N small models (bench/workspace_gen.py):

1. a cold `doit export` fills the local cache and uploads to a real nginx
   (WebDAV PUT) on loopback, as CI would;
2. the same entries (the local cache's action results and blobs, byte for
   byte) are uploaded to a real BuildGrid on loopback through the gRPC client;
3. restores alternate: a fresh copy of the sources with an EMPTY local cache
   reads nginx's read-only location, then another reads BuildGrid; --runs of
   each, every one checked to say "0 built, N restored".

Goal (issue 13): gRPC <= HTTP. Prints both medians and the ratio grpc/http.

    python bench/bench_grpc.py [--n 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from bench_cache import counts, doit, fresh_sources  # noqa: E402
from servers import INSTANCE, PASSWORD, USER, running_buildgrid, running_nginx  # noqa: E402
from workspace_gen import generate, subprocess_env  # noqa: E402

from rules.cache.grpc_remote import GrpcRemoteCache  # noqa: E402
from rules.cache.local import LocalCache  # noqa: E402
from rules.cache.records import ActionResult  # noqa: E402
from rules.cache.remote_config import RemoteConfig  # noqa: E402


def copy_to_grpc(cache_dir: Path, url: str) -> int:
    """Upload every action result of the local cache, blobs first, to the gRPC cache."""
    local = LocalCache(cache_dir)
    entries = 0
    with GrpcRemoteCache(RemoteConfig(url, upload=True, instance_name=INSTANCE)) as remote:
        for path in sorted((cache_dir / "ac").glob("*/*")):
            if path.name.startswith("."):
                continue
            data = path.read_bytes()
            result = ActionResult.from_reapi(data)
            remote.put_blobs({f.sha256: local.cas_path(f.sha256) for f in result.files})
            remote.put_ac(path.name, data)
            entries += 1
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rk-bench-grpc-") as tmp:
        work = Path(tmp)
        ws = work / "ws"
        print(f"generating {args.n} models ...", file=sys.stderr, flush=True)
        generate(ws, args.n, work / "spare")
        cache = work / "cache"
        with running_nginx(work / "nginx") as nginx, running_buildgrid(work / "bgd") as bgd:
            base = subprocess_env(RULES_KERAS_SERVER="0", RULES_KERAS_CACHE_DIR=str(cache))
            ci = dict(base, RULES_KERAS_REMOTE_CACHE=nginx.url, RULES_KERAS_REMOTE_UPLOAD="1",
                      RULES_KERAS_REMOTE_USER=USER, RULES_KERAS_REMOTE_PASSWORD=PASSWORD)
            print("cold build (fills the local cache and nginx) ...", file=sys.stderr, flush=True)
            _, out, _ = doit(ws, ci, "export")
            assert counts(out)[0] == args.n, out[-500:]
            uploaded = copy_to_grpc(cache, bgd.url)
            assert uploaded == args.n, uploaded

            remotes = {
                "http": {"RULES_KERAS_REMOTE_CACHE": nginx.ro_url},
                "grpc": {"RULES_KERAS_REMOTE_CACHE": bgd.url,
                         "RULES_KERAS_REMOTE_INSTANCE_NAME": INSTANCE},
            }
            times: dict[str, list[float]] = {name: [] for name in remotes}
            # One warm-up of each (page cache, BuildGrid's first-call costs), not counted.
            for run in range(args.runs + 1):
                for name, remote in remotes.items():
                    clone = fresh_sources(ws, work / f"{name}-clone{run}")
                    env = dict(subprocess_env(RULES_KERAS_SERVER="0"), **remote,
                               RULES_KERAS_CACHE_DIR=str(work / f"{name}-empty-cache{run}"))
                    elapsed, out, _ = doit(clone, env, "export")
                    assert counts(out) == (0, args.n, 0, 0), (name, counts(out))
                    assert out.count("from the remote cache") == args.n
                    if run:
                        times[name].append(elapsed)

    http, grpc = statistics.median(times["http"]), statistics.median(times["grpc"])
    print(f"\nrestore of N={args.n} targets into an empty local cache, "
          f"{args.runs} runs each (median), after one warm-up each")
    print(f"{'remote':36} {'median s':>9}  runs")
    for label, name, median in (("nginx, Bazel HTTP cache protocol", "http", http),
                                ("BuildGrid 0.4.4, REAPI gRPC", "grpc", grpc)):
        print(f"{label:36} {median:9.2f}  {[round(t, 2) for t in times[name]]}")
    verdict = "PASS" if grpc <= http else "FAIL"
    print(f"ratio grpc/http: {grpc / http:.2f} (goal <= 1: {verdict})")


if __name__ == "__main__":
    main()
