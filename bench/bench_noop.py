"""Time a no-op `doit export` at 100 and 1,000 targets against doit's own floor, in one run.

    python bench/bench_noop.py [--n 100,1000] [--runs 7] [--keep DIR] [--smoke]

With --keep DIR holding an earlier run's workspaces, they are reused (rebuilt if the
code changed their keys) instead of generated again: a 1,000-model cold build takes
about 10 minutes here.

For each N: generate a workspace of N models (bench/workspace_gen.py), build
it once (`doit -n 2 export`, then `doit server_stop`), and then time, in turn
and repeated --runs times so that load on a shared machine hits all of them alike:

- `python -c "import doit"`: the interpreter plus doit, the goal's yardstick;
- doit floor: a dodo.py of N tasks that are always up to date (`uptodate:
  [True]`): what doit itself costs per task, with no checking at all;
- hand-written: a dodo.py of N tasks with `file_dep` on each model's
  weights and code and `targets` on its artifact: the Makefile-style
  baseline, which trusts doit's DB and does not see the import closure,
  the toolchain or a damaged artifact;
- rules_keras: `doit export` on the built workspace (must say N up to date).

Each figure is the median wall time of whole processes, with min and max.
Goals (issue 14): at 100 targets <= 0.2 s and <= 2x `import doit`; at
1,000 targets <= 0.1 s + 1 ms per target. Misses print MISS; exit 0.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workspace_gen import PACKAGE, WEIGHTS, generate, subprocess_env

from rules.reporter import parse_summary

PYTHON = sys.executable

_FLOOR_DODO = '''
DOIT_CONFIG = {{"backend": "sqlite3", "verbosity": 0}}

def task_t():
    for i in range({n}):
        yield {{"name": f"t{{i:04d}}", "actions": [lambda: None], "uptodate": [True]}}
'''

_HAND_DODO = '''
from pathlib import Path

DOIT_CONFIG = {{"backend": "sqlite3", "verbosity": 0}}

def _export(src, out):
    Path(out).parent.mkdir(exist_ok=True)
    Path(out).write_bytes(Path(src).read_bytes())

def task_export():
    for d in sorted(Path("{package}").iterdir()):
        if not d.is_dir():
            continue
        out = Path("out") / (d.name + ".bin")
        yield {{
            "name": d.name,
            "actions": [(_export, [str(d / "{weights}"), str(out)])],
            "file_dep": [str(d / "{weights}"), str(d / "model.py"), str(d / "BUILD.py")],
            "targets": [str(out)],
        }}
'''


def _wall(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"benchmark broken: {' '.join(cmd)} in {cwd} failed:\n{done.stdout}{done.stderr}")
    return elapsed, done.stdout


def _stats(values: list[float]) -> str:
    return (f"median {statistics.median(values):.3f} s "
            f"(min {min(values):.3f}, max {max(values):.3f}, {len(values)} runs)")


def bench(n: int, runs: int, root: Path) -> dict[str, float]:
    ws, floor, hand = root / f"ws{n}", root / f"floor{n}", root / f"hand{n}"
    env = subprocess_env(RULES_KERAS_CACHE_DIR=str(root / f"cache{n}"))
    reuse = ws.exists()
    print(f"\n== {n} targets: {'reusing' if reuse else 'generating'} {ws}, building it "
          "(not timed)", flush=True)
    if not reuse:
        generate(ws, n, root / f"spare{n}")
    start = time.perf_counter()
    _wall([PYTHON, "-m", "doit", "-n", "2", "export"], ws, env)
    _wall([PYTHON, "-m", "doit", "server_stop"], ws, env)
    print(f"   build took {time.perf_counter() - start:.0f} s", flush=True)
    if not reuse:
        floor.mkdir()
        (floor / "dodo.py").write_text(_FLOOR_DODO.format(n=n))
        shutil.copytree(ws / PACKAGE, hand / PACKAGE)
        (hand / "dodo.py").write_text(_HAND_DODO.format(package=PACKAGE, weights=WEIGHTS))
    for folder in (floor, hand):  # first run fills doit's DB
        _wall([PYTHON, "-m", "doit"], folder, env)

    times: dict[str, list[float]] = {"import doit": [], "doit floor": [], "hand-written": [],
                                     "rules_keras": []}
    for _ in range(runs):
        times["import doit"].append(_wall([PYTHON, "-c", "import doit"], ws, env)[0])
        times["doit floor"].append(_wall([PYTHON, "-m", "doit"], floor, env)[0])
        times["hand-written"].append(_wall([PYTHON, "-m", "doit"], hand, env)[0])
        seconds, out = _wall([PYTHON, "-m", "doit", "export"], ws, env)
        summary = parse_summary(out)
        if summary is None or summary["up to date"] != n:
            sys.exit(f"benchmark broken: the no-op did not say {n} up to date:\n{out}")
        times["rules_keras"].append(seconds)
    for name, values in times.items():
        print(f"   {name:>13}: {_stats(values)}")
    med = {name: statistics.median(values) for name, values in times.items()}
    ratio = med["rules_keras"] / med["import doit"]
    print(f"   rules_keras / import doit: {ratio:.2f}x; "
          f"rules_keras / hand-written: {med['rules_keras'] / med['hand-written']:.2f}x; "
          f"per target above the doit floor: "
          f"{(med['rules_keras'] - med['doit floor']) / n * 1000:.2f} ms")
    if n == 100:
        ok = med["rules_keras"] <= 0.2 and ratio <= 2.0
        print(f"   goal <= 0.2 s and <= 2x import doit: {'met' if ok else 'MISS'}")
    if n >= 1000:
        goal = 0.1 + 0.001 * n
        print(f"   goal <= {goal:.2f} s: {'met' if med['rules_keras'] <= goal else 'MISS'}")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="100,1000", help="comma-separated target counts")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", type=Path,
                        help="work in this folder and keep it; reuses workspaces already there")
    parser.add_argument("--smoke", action="store_true", help="--n 5 --runs 2")
    args = parser.parse_args()
    counts = [5] if args.smoke else [int(x) for x in args.n.split(",")]
    runs = 2 if args.smoke else args.runs
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_noop_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        for n in counts:
            bench(n, runs, root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
