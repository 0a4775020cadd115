"""Time `doit export` on a generated workspace of N models against a naive per-process baseline.

    python bench/bench_build.py [--n 100] [--runs 5] [--cold-runs 3] [--naive-sample 10]
                                [--server on|off] [--keep DIR] [--json PATH] [--smoke]

Scenarios, all in one run on one generated workspace:

- cold build: no artifacts, no state, no export server, an empty cache folder;
  `doit export -n 1` (the like-for-like number: the baseline is sequential) and
  `doit export -n 2`.
- no-op build: `doit export` with everything up to date; also checked to import
  no TensorFlow, Keras or JAX (PYTHONPROFILEIMPORTTIME, inherited by any worker)
  and to leave no export server running.
- one-change rebuild: one value in one model's weights file changed (new content
  every run, so the shared cache cannot restore it); must say "1 built".
  With the export server on (the default) it is timed twice: with no server
  running (each run pays the TensorFlow import) and with the server warm.
- naive baseline: one fresh `python -c` per model that imports Keras, builds the
  model, loads its weights and calls `model.export(path, format="tf_saved_model")`,
  which is what a CI script does without a build tool. It has no change detection,
  so its no-op and one-change cost is the same N exports. With --naive-sample K < N
  only K models (spread over the sizes) are timed and the per-model median is
  multiplied by N; the output says so.

It is a measurement, not a test: missed targets print FAIL but exit 0. A broken
benchmark (a build that fails or reports the wrong counts) exits 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# bench/ holds scripts, not a package: make the generator importable when run by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workspace_gen import (
    BenchModel,
    generate,
    subprocess_env,
)

from rules.reporter import parse_summary

NOOP_TARGET_S = 0.3
COLD_TARGET_RATIO = 8.0
HEAVY_MODULES = frozenset({"tensorflow", "keras", "jax", "jaxlib", "tf_keras"})
# The module column of a PYTHONPROFILEIMPORTTIME line: "import time: 123 | 456 |   pkg.mod".
IMPORT_LINE = re.compile(r"^import time:\s*\d+\s*\|\s*\d+\s*\|\s*(\S+)\s*$")

NAIVE_SCRIPT = """\
import importlib, sys
import keras
model = importlib.import_module(sys.argv[1]).build_model()
model.load_weights(sys.argv[2])
model.export(sys.argv[3], format="tf_saved_model")
"""

SERVER_STATES = ("on", "off")
SMOKE = {"n": 5, "runs": 1, "cold_runs": 1, "naive_sample": 2}
DEFAULTS = {"n": 100, "runs": 5, "cold_runs": 3, "naive_sample": 10}


class BenchError(Exception):
    """The benchmark itself went wrong (a build failed or did not do what was expected)."""


@dataclass
class Series:
    """Wall-clock seconds of repeated runs of one scenario."""

    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def spread(self) -> str:
        if len(self.seconds) < 2:
            return ""
        return f"{min(self.seconds):.2f}-{max(self.seconds):.2f}"


@dataclass
class Results:
    n: int
    cold: dict[str, Series] = field(default_factory=dict)
    noop_first: float = 0.0
    noop: Series = field(default_factory=Series)
    noop_cpu: Series = field(default_factory=Series)
    noop_heavy_imports: list[str] = field(default_factory=list)
    noop_started_worker: bool = False
    server: str = "on"
    one_change: Series = field(default_factory=Series)
    one_change_no_server: Series | None = None
    notices: list[str] = field(default_factory=list)
    naive: dict[str, float] = field(default_factory=dict)
    worker_seconds: list[float] = field(default_factory=list)

    @property
    def naive_per_model(self) -> float:
        return statistics.median(self.naive.values())

    @property
    def naive_total(self) -> float:
        """All N exports: measured when every model was sampled, else median x N."""
        if len(self.naive) == self.n:
            return sum(self.naive.values())
        return self.naive_per_model * self.n


def _doit() -> list[str]:
    beside = Path(sys.executable).with_name("doit")
    found = str(beside) if beside.exists() else shutil.which("doit")
    if found is None:
        raise BenchError("no `doit` beside this Python or on PATH; pip install rules-keras")
    return [found]


def _run(
    cmd: Sequence[str], cwd: Path, env: dict[str, str]
) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, proc


def _perturb_weights(path: Path, step: int) -> None:
    """Change one value in a .weights.h5 file in place (h5py only: no backend import)."""
    import h5py

    datasets: list[h5py.Dataset] = []
    with h5py.File(path, "r+") as handle:
        handle.visititems(
            lambda _, obj: datasets.append(obj)
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" and obj.size
            else None
        )
        if not datasets:
            raise BenchError(f"{path} holds no float dataset to change")
        values = datasets[0][...]
        values.flat[0] += 1e-3 * step
        datasets[0][...] = values


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _counts(proc: subprocess.CompletedProcess[str]) -> tuple[int, int, int, int]:
    found = parse_summary(proc.stdout)
    if proc.returncode != 0 or found is None:
        out = "\n".join(proc.stdout.splitlines()[-8:])
        err = "\n".join(proc.stderr.splitlines()[-30:])
        raise BenchError(
            f"`doit export` exited {proc.returncode}; its last output:\n{out}\n"
            f"and its last errors:\n{err}"
        )
    return found["built"], found["restored"], found["up to date"], found["failed"]


def _expect(proc: subprocess.CompletedProcess[str], what: str, built: int, uptodate: int) -> None:
    got = _counts(proc)
    if got != (built, 0, uptodate, 0):
        raise BenchError(
            f"{what}: expected {built} built, {uptodate} up to date; `doit export` said "
            f"{got[0]} built, {got[1]} restored, {got[2]} up to date, {got[3]} failed"
        )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    """One generated workspace and the scenarios run against it."""

    def __init__(self, work: Path, n: int, server: str) -> None:
        self.work = work
        self.server = server
        self.notices: list[str] = []
        self.root = work / "ws"
        self.spare = work / "spare"
        self.caches = work / "caches"
        self.naive_out = work / "naive"
        # Servers are shared per environment and user: a folder of our own
        # keeps this benchmark's cold builds cold, and its server_stop from
        # stopping the server of someone else's builds on this machine.
        self.runtime = work / "runtime"
        self.n = n
        self.changed_index = n // 2
        self.doit = _doit()
        self._cache_count = 0
        self._changes = 0
        self.models: list[BenchModel] = []

    def setup(self) -> None:
        started = time.perf_counter()
        self.models = generate(self.root, self.n, self.spare)
        _log(f"generated {self.n} models in {self.root} ({time.perf_counter() - started:.1f} s)")

    def env(self, *, fresh_cache: bool = False) -> dict[str, str]:
        """The environment of one `doit` run.

        A cold build gets a new, empty cache folder, as on a new machine: once a
        cache holds an artifact, building it again would be a restore. Every
        other run shares one cache folder, as a developer's builds do; the cache
        folder also holds the toolchain map, which a no-op reads.
        """
        if fresh_cache:
            self._cache_count += 1
            cache = self.caches / f"cold-{self._cache_count}"
        else:
            cache = self.caches / "shared"
        # A crash (one cold -n 2 build died of SIGSEGV) then leaves a Python traceback.
        extra = {"RULES_KERAS_CACHE_DIR": str(cache), "PYTHONFAULTHANDLER": "1",
                 "RULES_KERAS_RUNTIME_DIR": str(self.runtime)}
        if self.server == "off":
            extra["RULES_KERAS_SERVER"] = "0"
        return subprocess_env(**extra)

    def export(
        self, *args: str, fresh_cache: bool = False
    ) -> tuple[float, subprocess.CompletedProcess[str]]:
        env = self.env(fresh_cache=fresh_cache)
        seconds, proc = _run([*self.doit, *args, "export"], self.root, env)
        self._collect_notices(proc)
        return seconds, proc

    def _collect_notices(self, proc: subprocess.CompletedProcess[str]) -> None:
        """Keep warnings (e.g. a server fallback): they change what a number means."""
        for line in proc.stderr.splitlines():
            if "rules_keras: warning" in line and line not in self.notices:
                self.notices.append(line.strip())

    def stop_server(self) -> None:
        """Stop the workspace's export servers (untimed); a no-op when none runs."""
        if (self.root / ".rules_keras").is_dir():
            _run([*self.doit, "server_stop"], self.root, self.env())

    def server_running(self) -> bool:
        _, proc = _run([*self.doit, "server_status"], self.root, self.env())
        return re.search(r"^\w+: running", proc.stdout, re.M) is not None

    def cold(self, jobs: int, runs: int) -> Series:
        series = Series()
        for i in range(runs):
            self.stop_server()
            shutil.rmtree(self.root / "artifacts", ignore_errors=True)
            shutil.rmtree(self.root / ".rules_keras", ignore_errors=True)
            seconds, proc = self.export("-n", str(jobs), fresh_cache=True)
            _expect(proc, f"cold build -n {jobs}", self.n, 0)
            series.seconds.append(seconds)
            _log(f"cold build -n {jobs}, run {i + 1}/{runs}: {seconds:.2f} s")
        return series

    def worker_seconds(self) -> list[float]:
        """Per-target export+verify time recorded by the worker in each manifest."""
        found = []
        for model in self.models:
            package = model.label[2:].partition(":")[0]
            name = model.label.partition(":")[2]
            path = self.root / "artifacts" / package / f"{name}.manifest.json"
            seconds = json.loads(path.read_text())["record"].get("seconds")
            if isinstance(seconds, (int, float)):
                found.append(float(seconds))
        return found

    def noop(self, runs: int) -> tuple[float, Series, Series]:
        """First no-op after the cold build, then `runs` more: wall and CPU seconds.

        CPU (user + sys of the doit process) is recorded because wall time on a
        shared 2-core machine grows with other people's load; CPU much less so.
        """
        first, proc = self.export()
        _expect(proc, "first no-op", 0, self.n)
        _log(f"first no-op after the cold build: {first:.3f} s")
        wall, cpu = Series(), Series()
        for i in range(runs):
            before = _children_cpu()
            seconds, proc = self.export()
            cpu.seconds.append(_children_cpu() - before)
            _expect(proc, "no-op", 0, self.n)
            wall.seconds.append(seconds)
            _log(f"no-op, run {i + 1}/{runs}: {seconds:.3f} s (cpu {cpu.seconds[-1]:.3f} s)")
        return first, wall, cpu

    def noop_imports(self) -> tuple[list[str], bool]:
        """Heavy modules a no-op imported, and whether it started a worker or a server.

        A worker inherits PYTHONPROFILEIMPORTTIME and reports to our stderr; the
        export server logs elsewhere, so it is stopped first and must still be
        stopped afterwards.
        """
        self.stop_server()
        env = self.env()
        env["PYTHONPROFILEIMPORTTIME"] = "1"
        _, proc = _run([*self.doit, "export"], self.root, env)
        _expect(proc, "no-op with PYTHONPROFILEIMPORTTIME", 0, self.n)
        heavy = set()
        for line in proc.stderr.splitlines():
            match = IMPORT_LINE.match(line)
            if match and match.group(1).split(".")[0] in HEAVY_MODULES:
                heavy.add(match.group(1))
        started = "starting a" in proc.stderr or "export server" in proc.stderr
        return sorted(heavy), started or self.server_running()

    def one_change(self, runs: int, *, stop_server: bool) -> Series:
        """Change one value in one weights file and rebuild; with stop_server, no server is warm."""
        changed = self.models[self.changed_index]
        series = Series()
        for i in range(runs):
            # New content every run, never seen by the shared cache: a rebuild, not a restore.
            self._changes += 1
            _perturb_weights(changed.weights, self._changes)
            if stop_server:
                self.stop_server()
            seconds, proc = self.export()
            _expect(proc, f"one-change rebuild ({changed.label})", 1, self.n - 1)
            series.seconds.append(seconds)
            what = "no server running" if stop_server else "server left as it was"
            _log(f"one-change rebuild ({what}), run {i + 1}/{runs}: {seconds:.2f} s")
        return series

    def naive(self, sample: int) -> dict[str, float]:
        k = min(sample, self.n)
        if k >= self.n:
            picked = list(range(self.n))
        elif k == 1:
            picked = [0]
        else:
            picked = sorted({round(i * (self.n - 1) / (k - 1)) for i in range(k)})
        timings: dict[str, float] = {}
        shutil.rmtree(self.naive_out, ignore_errors=True)
        self.naive_out.mkdir(parents=True)
        env = subprocess_env()
        for j, index in enumerate(picked):
            model = self.models[index]
            out = self.naive_out / f"m{index:03d}"
            cmd = [sys.executable, "-c", NAIVE_SCRIPT, f"{model.module}.model",
                   str(model.weights), str(out)]
            seconds, proc = _run(cmd, self.root, env)
            if proc.returncode != 0 or not (out / "saved_model.pb").is_file():
                tail = "\n".join(proc.stderr.splitlines()[-15:])
                raise BenchError(f"naive export of {model.module} failed:\n{tail}")
            timings[model.label] = seconds
            _log(f"naive export {j + 1}/{len(picked)} ({model.module}): {seconds:.2f} s")
        return timings


def _ratio(naive: float, ours: float) -> str:
    return f"{naive / ours:.1f}x" if ours > 0 else "-"


def _fmt(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 1 else f"{seconds:.2f} s"


def report(results: Results, args: argparse.Namespace, command: str) -> str:
    n = results.n
    k = len(results.naive)
    extrapolated = k < n
    naive_total = results.naive_total
    per_model = results.naive_per_model
    cold1 = results.cold["-n 1"]
    cold2 = results.cold["-n 2"]
    noop = results.noop
    change = results.one_change
    mark = "*" if extrapolated else ""

    rows = [
        ("cold build, doit -n 1", cold1, naive_total),
        ("cold build, doit -n 2", cold2, naive_total),
        ("no-op build", noop, naive_total),
    ]
    if results.one_change_no_server is not None:
        rows.append(("one change, no server", results.one_change_no_server, naive_total))
        rows.append(("one change, warm server", change, naive_total))
    else:
        rows.append(("one-change rebuild", change, naive_total))
    lines = [
        f"rules_keras build benchmark: {n} models, {command}",
        f"rules_keras at {_revision()}, {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"python {platform.python_version()}, keras {_version('keras')}, "
        f"tensorflow {_version('tensorflow-cpu') or _version('tensorflow')}, "
        f"doit {_version('doit')}, {os.cpu_count()} cpus, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"export server: {results.server}"
        + (" (RULES_KERAS_SERVER=0)" if results.server == "off" else " (the default)"),
        "",
        f"{'scenario':<24} {'ours (median)':>14} {'spread':>13} {'runs':>5} "
        f"{'naive':>10} {'naive/ours':>11}",
    ]
    for name, series, naive in rows:
        lines.append(
            f"{name:<24} {_fmt(series.median):>14} {series.spread():>13} "
            f"{len(series.seconds):>5} {_fmt(naive) + mark:>10} {_ratio(naive, series.median):>11}"
        )
    lines += [
        f"{'no-op, CPU (user+sys)':<24} {_fmt(results.noop_cpu.median):>14} "
        f"{results.noop_cpu.spread():>13} {len(results.noop_cpu.seconds):>5}",
        f"{'first no-op after cold':<24} {_fmt(results.noop_first):>14} {'':>13} {1:>5}",
        "",
        f"naive: one fresh `python -c` per model (import keras, build, load_weights, "
        f"model.export); per-model median {per_model:.2f} s "
        f"(min {min(results.naive.values()):.2f}, max {max(results.naive.values()):.2f}).",
    ]
    if extrapolated:
        lines.append(
            f"  * EXTRAPOLATED: {k} of {n} models timed, naive = per-model median x {n}. "
            f"Use --naive-sample {n} to time all of them."
        )
    else:
        lines.append(f"  all {n} models timed; naive = their sum.")
    lines += [
        "  The naive script has no change detection: its no-op and one-change cost is N "
        f"exports again; re-exporting only the changed model by hand would cost {per_model:.2f} s.",
        "  It does not verify anything; ours reloads every SavedModel and checks it against "
        "Keras.",
        "  Compare -n 1 with the naive number: the baseline runs one process at a time.",
    ]
    if results.worker_seconds:
        ws = results.worker_seconds
        lines.append(
            f"ours, inside the worker: export+verify per target median "
            f"{statistics.median(ws):.3f} s, sum {sum(ws):.1f} s in the last -n 1 cold build"
        )
    for notice in results.notices:
        lines.append(f"build warning seen: {notice}")
    lines.append("")
    noop_ok = noop.median <= NOOP_TARGET_S
    clean = not results.noop_heavy_imports and not results.noop_started_worker
    ratio1 = naive_total / cold1.median
    lines.append(
        f"{'PASS' if noop_ok else 'FAIL'}  no-op of {n} targets <= {NOOP_TARGET_S} s: "
        f"median {noop.median:.3f} s"
    )
    heavy = ", ".join(results.noop_heavy_imports[:8]) or "none"
    lines.append(
        f"{'PASS' if clean else 'FAIL'}  no-op imports no TensorFlow/Keras/JAX: "
        f"heavy imports: {heavy}; worker or server started: "
        f"{'yes' if results.noop_started_worker else 'no'}"
    )
    lines.append(
        f"{'PASS' if ratio1 >= COLD_TARGET_RATIO else 'FAIL'}  cold build >= "
        f"{COLD_TARGET_RATIO:g}x faster than naive (-n 1): {ratio1:.1f}x"
        + (" (naive extrapolated)" if extrapolated else "")
    )
    lines.append(f"      (with -n 2: {naive_total / cold2.median:.1f}x)")
    if n != DEFAULTS["n"]:
        lines.append(f"note: the targets are stated for {DEFAULTS['n']} models; this run has {n}.")
    return "\n".join(lines)


def _revision() -> str:
    """The commit of the rules being measured, marked dirty when the tree has local changes."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "rules"],
            cwd=repo, capture_output=True, text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' (rules/ has uncommitted changes)' if dirty else ''}"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help=f"models to generate (default {DEFAULTS['n']})")
    parser.add_argument(
        "--runs", type=int, help=f"no-op and one-change repetitions (default {DEFAULTS['runs']})"
    )
    parser.add_argument(
        "--cold-runs", type=int,
        help=f"cold builds per -n setting (default {DEFAULTS['cold_runs']})",
    )
    parser.add_argument(
        "--naive-sample", type=int,
        help=f"models the naive baseline times; N times them all (default "
        f"{DEFAULTS['naive_sample']})",
    )
    parser.add_argument(
        "--server", choices=SERVER_STATES, default="on",
        help="the warm export server: on (the default) or off (RULES_KERAS_SERVER=0)",
    )
    parser.add_argument("--keep", type=Path, help="generate into this (new or empty) folder and "
                        "keep it; default: a temporary folder, removed afterwards")
    parser.add_argument("--json", type=Path, help="also write the raw timings here")
    parser.add_argument(
        "--smoke", action="store_true",
        help="quick check that everything runs: "
        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE.items())
        + " unless given",
    )
    args = parser.parse_args(argv)
    for key, default in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, SMOKE[key] if args.smoke else default)
    for key in DEFAULTS:
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python bench/bench_build.py " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        print(f"--keep {args.keep}: the folder is not empty; pass a new one", file=sys.stderr)
        return 2
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="rules_keras_bench-"))
    bench = Bench(work, args.n, args.server)
    results = Results(n=args.n, server=args.server)
    try:
        bench.setup()
        results.cold["-n 1"] = bench.cold(1, args.cold_runs)
        results.worker_seconds = bench.worker_seconds()
        results.cold["-n 2"] = bench.cold(2, args.cold_runs)
        results.noop_first, results.noop, results.noop_cpu = bench.noop(args.runs)
        results.noop_heavy_imports, results.noop_started_worker = bench.noop_imports()
        if args.server == "on":
            results.one_change_no_server = bench.one_change(args.runs, stop_server=True)
        # The last run above (or the first run here when off) leaves the server warm.
        results.one_change = bench.one_change(args.runs, stop_server=False)
        results.naive = bench.naive(args.naive_sample)
        results.notices = bench.notices
    except BenchError as err:
        print(f"benchmark broken: {err}", file=sys.stderr)
        return 2
    finally:
        # A server left running would outlive the benchmark (and its folder).
        bench.stop_server()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = report(results, args, command.strip())
    print(text)
    if args.json:
        payload = asdict(results)
        payload.update(command=command.strip(), report=text)
        args.json.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
