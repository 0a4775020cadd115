"""Time builds with the warm export server against per-build workers and a naive baseline.

    python bench/bench_server.py [--n 100] [--runs 5] [--cold-runs 1] [--naive-sample 10]
                                 [--keep DIR] [--json PATH] [--smoke]

Scenarios, all in one run on one workspace made by bench/workspace_gen.py:

- naive baseline: bench_build's, one fresh `python -c` per model (import Keras,
  build, load weights, model.export); sampled and extrapolated the same way.
- cold build, per-build workers: no artifacts, no state, an empty cache,
  RULES_KERAS_SERVER=0; `doit -n 1 export` and `doit -n 2 export`.
- cold build, server started by the build: the same, with the server on and
  none running (the first build in a fresh clone); -n 1 and -n 2.
- cold build, server already warm: artifacts and cache gone, server running; -n 2.
- one-change rebuild, server warm: one value in one model's weights file
  changed in place (new content each run, so the shared cache cannot restore
  it); the server has finished warming its spare child before each run, as it
  has by the time a user has edited a file. Must say "1 built".
- one-change rebuild, server off: the same with RULES_KERAS_SERVER=0.

Also checked: a no-op build does not contact the server (its job count stays).
It is a measurement: targets missed print FAIL but exit 0; a broken
benchmark (a failed build, wrong counts) exits 2. The server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# bench/ holds scripts, not a package: import the generator and bench_build by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_build import (
    Bench,
    BenchError,
    Series,
    _counts,
    _perturb_weights,
    _revision,
    _run,
    _version,
)

from rules.execution.server import client as server_client
from rules.execution.server.runtime import servers_in

REBUILD_TARGET_S = 1.0
COLD_TARGET_RATIO = 10.0
SPARE_WAIT_S = 30.0
SMOKE = {"n": 5, "runs": 2, "cold_runs": 1, "naive_sample": 2}
DEFAULTS = {"n": 100, "runs": 5, "cold_runs": 1, "naive_sample": 10}


@dataclass
class Results:
    n: int
    cold: dict[str, Series] = field(default_factory=dict)
    rebuild_warm: Series = field(default_factory=Series)
    rebuild_off: Series = field(default_factory=Series)
    rebuild_export_seconds: list[float] = field(default_factory=list)
    naive: dict[str, float] = field(default_factory=dict)
    noop_contacted_server: bool = False

    @property
    def naive_total(self) -> float:
        if len(self.naive) == self.n:
            return sum(self.naive.values())
        return statistics.median(self.naive.values()) * self.n


class ServerBench(Bench):
    """bench_build's workspace and baseline, with the server switched per scenario."""

    def server_env(self, server: bool, fresh_cache: bool) -> dict[str, str]:
        """bench_build's environment (a new cache folder for cold builds, else a shared
        one), with the server on or off."""
        env = self.env(fresh_cache=fresh_cache)
        env["RULES_KERAS_SERVER"] = "1" if server else "0"
        return env

    def build(self, jobs: int, server: bool, *, fresh_cache: bool = False
              ) -> tuple[float, subprocess.CompletedProcess[str]]:
        env = self.server_env(server, fresh_cache)
        return _run([*self.doit, "-n", str(jobs), "export"], self.root, env)

    def server_status(self) -> dict[str, object] | None:
        servers = [p for p in servers_in(self.runtime) if p.backend == "tensorflow"]
        return server_client.request_status(servers[0]) if servers else None

    def wait_for_spare(self) -> None:
        deadline = time.monotonic() + SPARE_WAIT_S
        while time.monotonic() < deadline:
            status = self.server_status()
            if status is not None and status.get("spare") == "ready":
                return
            time.sleep(0.1)
        raise BenchError(f"the server had no warm spare child after {SPARE_WAIT_S:g}s")

    def clear(self, keep_server: bool) -> None:
        """Remove artifacts and state; with keep_server, leave the running server alone."""
        shutil.rmtree(self.root / "artifacts", ignore_errors=True)
        state = self.root / ".rules_keras"
        if not keep_server:
            self.stop_server()
            shutil.rmtree(state, ignore_errors=True)
            return
        for entry in state.iterdir() if state.is_dir() else []:
            if entry.name != "server":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def cold_series(self, name: str, jobs: int, runs: int, server: bool,
                    warm: bool) -> Series:
        series = Series()
        for i in range(runs):
            self.clear(keep_server=warm)
            if warm and self.server_status() is None:
                raise BenchError("the server is not running before a warm cold build")
            seconds, proc = self.build(jobs, server, fresh_cache=True)
            _check(proc, name, self.n, 0)
            started = "started the tensorflow export server" in proc.stderr
            if server and started == warm:
                raise BenchError(f"{name}: the server was {'' if started else 'not '}started")
            series.seconds.append(seconds)
            _log(f"{name}, run {i + 1}/{runs}: {seconds:.2f} s")
        return series

    def rebuilds(self, runs: int, server: bool) -> tuple[Series, list[float]]:
        changed = self.models[self.changed_index]
        series, exports = Series(), []
        for i in range(runs):
            self._changes += 1
            _perturb_weights(changed.weights, self._changes)
            if server:
                self.wait_for_spare()
            seconds, proc = self.build(1, server)
            _check(proc, f"one-change rebuild ({changed.label})", 1, self.n - 1)
            if server and "using the warm tensorflow export server" not in proc.stderr:
                raise BenchError("the one-change rebuild did not use the warm server")
            series.seconds.append(seconds)
            exports.append(self._record_seconds(changed.label))
            what = "server warm" if server else "server off"
            _log(f"one-change rebuild, {what}, run {i + 1}/{runs}: {seconds:.3f} s")
        return series, exports

    def noop_contacts_server(self) -> bool:
        before = self.server_status()
        _, proc = self.build(1, True)
        _check(proc, "no-op", 0, self.n)
        after = self.server_status()
        if before is None or after is None:
            raise BenchError("the server is not running around the no-op build")
        return before.get("jobs") != after.get("jobs") or "export server" in proc.stderr

    def _record_seconds(self, label: str) -> float:
        package, _, name = label[2:].partition(":")
        path = self.root / "artifacts" / package / f"{name}.manifest.json"
        return float(json.loads(path.read_text())["record"].get("seconds", 0.0))


def _check(proc: subprocess.CompletedProcess[str], what: str, built: int, uptodate: int) -> None:
    got = _counts(proc)
    if got != (built, 0, uptodate, 0):
        raise BenchError(f"{what}: expected {built} built, {uptodate} up to date; got {got}")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fmt(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 1 else f"{seconds:.2f} s"


def report(results: Results, command: str) -> str:
    n, naive = results.n, results.naive_total
    extrapolated = len(results.naive) < n
    mark = "*" if extrapolated else ""
    lines = [
        f"rules_keras export server benchmark: {n} models, {command}",
        f"rules_keras at {_revision()}, {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"python {platform.python_version()}, keras {_version('keras')}, tensorflow "
        f"{_version('tensorflow-cpu') or _version('tensorflow')}, {os.cpu_count()} cpus, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        f"{'scenario':<44} {'median':>9} {'spread':>12} {'runs':>5} {'naive/ours':>11}",
    ]
    rows = [(f"cold build, {name}", series) for name, series in results.cold.items()]
    rows += [("one-change rebuild, server warm", results.rebuild_warm),
             ("one-change rebuild, server off", results.rebuild_off)]
    for name, series in rows:
        ratio = f"{naive / series.median:.1f}x" if name.startswith("cold") else ""
        lines.append(f"{name:<44} {_fmt(series.median):>9} {series.spread():>12} "
                     f"{len(series.seconds):>5} {ratio:>11}")
    per_model = statistics.median(results.naive.values())
    lines += [
        f"{'naive, all ' + str(n) + ' models' + mark:<44} {_fmt(naive):>9}",
        "",
        f"naive: one fresh `python -c` per model; per-model median {per_model:.2f} s.",
    ]
    if extrapolated:
        lines.append(f"  * EXTRAPOLATED: {len(results.naive)} of {n} models timed, "
                     f"naive = per-model median x {n}.")
    if results.rebuild_export_seconds:
        export = statistics.median(results.rebuild_export_seconds)
        lines.append("one-change rebuild, server warm: the export itself (run_job in the "
                     f"server's child) took a median {export:.3f} s")
    lines.append("")
    warm = results.rebuild_warm.median
    lines.append(f"{'PASS' if warm <= REBUILD_TARGET_S else 'FAIL'}  one-change rebuild with the "
                 f"server warm <= {REBUILD_TARGET_S:g} s: median {warm:.3f} s "
                 f"(server off: {results.rebuild_off.median:.2f} s)")
    first = results.cold.get("server started by the build, -n 2")
    if first is not None:
        ratio = naive / first.median
        lines.append(
            f"{'PASS' if ratio >= COLD_TARGET_RATIO else 'FAIL'}  cold build with the server "
            f"(-n 2, started by the build) >= {COLD_TARGET_RATIO:g}x faster than naive: "
            f"{ratio:.1f}x" + (" (naive extrapolated)" if extrapolated else ""))
    lines.append(f"{'FAIL' if results.noop_contacted_server else 'PASS'}  a no-op build "
                 "does not contact the server")
    if n != DEFAULTS["n"]:
        lines.append(f"note: the targets are stated for {DEFAULTS['n']} models; this run has {n}.")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, help=f"models (default {DEFAULTS['n']})")
    parser.add_argument("--runs", type=int,
                        help=f"one-change rebuilds per mode (default {DEFAULTS['runs']})")
    parser.add_argument("--cold-runs", type=int,
                        help=f"cold builds per scenario (default {DEFAULTS['cold_runs']})")
    parser.add_argument("--naive-sample", type=int, help="models the naive baseline times "
                        f"(default {DEFAULTS['naive_sample']})")
    parser.add_argument("--keep", type=Path, help="generate into this new folder and keep it")
    parser.add_argument("--json", type=Path, help="also write the raw timings here")
    parser.add_argument("--smoke", action="store_true", help="a quick run: " + ", ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in SMOKE.items()))
    args = parser.parse_args(argv)
    for key, default in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, SMOKE[key] if args.smoke else default)
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python bench/bench_server.py " + " ".join(
        sys.argv[1:] if argv is None else list(argv))
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        print(f"--keep {args.keep}: the folder is not empty; pass a new one", file=sys.stderr)
        return 2
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="rules_keras_srv-"))
    bench = ServerBench(work, args.n, "on")
    results = Results(n=args.n)
    try:
        bench.setup()
        results.naive = bench.naive(args.naive_sample)
        runs = args.cold_runs
        for jobs in (1, 2):
            results.cold[f"per-build workers, -n {jobs}"] = bench.cold_series(
                f"cold build, workers, -n {jobs}", jobs, runs, server=False, warm=False)
            results.cold[f"server started by the build, -n {jobs}"] = bench.cold_series(
                f"cold build, server started by it, -n {jobs}", jobs, runs, server=True,
                warm=False)
        results.cold["server already warm, -n 2"] = bench.cold_series(
            "cold build, server warm, -n 2", 2, runs, server=True, warm=True)
        results.noop_contacted_server = bench.noop_contacts_server()
        results.rebuild_warm, results.rebuild_export_seconds = bench.rebuilds(args.runs, True)
        results.rebuild_off, _ = bench.rebuilds(args.runs, False)
    except BenchError as err:
        print(f"benchmark broken: {err}", file=sys.stderr)
        return 2
    finally:
        bench.stop_server()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = report(results, command.strip())
    print(text)
    if args.json:
        payload = asdict(results)
        payload.update(command=command.strip(), report=text)
        args.json.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
