"""Restore N targets from the local cache and from an nginx remote, next to a real rebuild.

In one run, on a generated workspace of N small models (bench/workspace_gen.py):

1. rebuild: a cold `doit export` with an empty cache and no warm server (the
   baseline the cache saves), which also fills the local cache and uploads
   to a real nginx (WebDAV PUT) on loopback;
2. local restore: `rm -rf artifacts .rules_keras`, then `doit export` against
   the filled local cache (issue target: <= 1 s for 100 targets);
3. remote restore: a fresh copy of the sources with an EMPTY local cache,
   reading the nginx remote read-only (issue target: <= 2 s for 100 targets).

Each restore is repeated --runs times (median reported) and checked to say
"0 built, N restored"; one extra run of each with PYTHONPROFILEIMPORTTIME=1
checks that no TensorFlow, Keras or JAX module was imported.

    python bench/bench_cache.py [--n 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from servers import PASSWORD, USER, running_nginx  # noqa: E402
from workspace_gen import generate, subprocess_env  # noqa: E402

SUMMARY = re.compile(r"^(\d+) built, (\d+) restored, (\d+) up to date, (\d+) failed$", re.M)
HEAVY = {"tensorflow", "keras", "jax", "jaxlib"}


def doit(ws: Path, env: dict[str, str], *args: str) -> tuple[float, str, str]:
    doit_bin = Path(sys.executable).with_name("doit")
    started = time.perf_counter()
    proc = subprocess.run(
        [str(doit_bin), *args], cwd=ws, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise SystemExit(f"doit {' '.join(args)} failed in {ws}:\n{tail}")
    return elapsed, proc.stdout, proc.stderr


def counts(stdout: str) -> tuple[int, ...]:
    found = SUMMARY.findall(stdout)
    if not found:
        raise SystemExit(f"no summary line in:\n{stdout[-2000:]}")
    return tuple(int(x) for x in found[-1])


def heavy_imports(stderr: str) -> set[str]:
    return {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in stderr.splitlines()
        if "import time:" in line
    } & HEAVY


def fresh_sources(src: Path, dest: Path) -> Path:
    """A new clone: the sources without artifacts/ and .rules_keras/."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("artifacts", ".rules_keras"))
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rk-bench-cache-") as tmp:
        work = Path(tmp)
        ws = work / "ws"
        print(f"generating {args.n} models ...", file=sys.stderr, flush=True)
        generate(ws, args.n, work / "spare")
        cache = work / "cache"
        with running_nginx(work / "nginx") as nginx:
            base = subprocess_env(RULES_KERAS_SERVER="0", RULES_KERAS_CACHE_DIR=str(cache))
            ci = dict(
                base,
                RULES_KERAS_REMOTE_CACHE=nginx.url,
                RULES_KERAS_REMOTE_UPLOAD="1",
                RULES_KERAS_REMOTE_USER=USER,
                RULES_KERAS_REMOTE_PASSWORD=PASSWORD,
            )
            print("cold rebuild (fills the caches) ...", file=sys.stderr, flush=True)
            rebuild, out, _ = doit(ws, ci, "export")
            assert counts(out)[0] == args.n, out[-500:]

            local_times = []
            for run in range(args.runs + 1):
                shutil.rmtree(ws / "artifacts")
                shutil.rmtree(ws / ".rules_keras")
                env = dict(base, PYTHONPROFILEIMPORTTIME="1") if run == args.runs else base
                elapsed, out, err = doit(ws, env, "export")
                assert counts(out) == (0, args.n, 0, 0), counts(out)
                if run == args.runs:
                    local_heavy = heavy_imports(err)
                else:
                    local_times.append(elapsed)

            remote_times = []
            for run in range(args.runs + 1):
                clone = fresh_sources(ws, work / f"clone{run}")
                env = dict(
                    subprocess_env(RULES_KERAS_SERVER="0"),
                    RULES_KERAS_CACHE_DIR=str(work / f"empty-cache{run}"),
                    RULES_KERAS_REMOTE_CACHE=nginx.ro_url,
                )
                if run == args.runs:
                    env["PYTHONPROFILEIMPORTTIME"] = "1"
                elapsed, out, err = doit(clone, env, "export")
                assert counts(out) == (0, args.n, 0, 0), counts(out)
                assert out.count("from the remote cache") == args.n
                if run == args.runs:
                    remote_heavy = heavy_imports(err)
                else:
                    remote_times.append(elapsed)

    local = statistics.median(local_times)
    remote = statistics.median(remote_times)
    print(f"\nrules_keras cache restore, N={args.n} targets, {args.runs} runs each (median)")
    print(f"{'scenario':44} {'seconds':>8} {'vs rebuild':>11} {'target':>8}")
    print(f"{'cold rebuild, no cache (baseline)':44} {rebuild:8.2f} {'1.0x':>11} {'':>8}")
    for name, value, target in (
        # Issue 14 goal 2 (the earlier goals were 1 s and 2 s).
        ("restore from local cache (rm -rf artifacts)", local, 0.5),
        ("restore from nginx remote, empty local cache", remote, 1.0),
    ):
        verdict = "PASS" if value <= target else "FAIL"
        print(f"{name:44} {value:8.2f} {rebuild / value:10.1f}x {f'<={target:g}s':>6} {verdict}")
    print(f"local runs: {[round(t, 2) for t in local_times]}")
    print(f"remote runs: {[round(t, 2) for t in remote_times]}")
    print(f"heavy imports during restores: local {sorted(local_heavy) or 'none'}, "
          f"remote {sorted(remote_heavy) or 'none'}")


if __name__ == "__main__":
    main()
