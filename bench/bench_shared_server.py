"""Memory of warm export servers when five workspaces build in turn: one server per
workspace (before) against one per environment (after).

    python bench/bench_shared_server.py [--workspaces 5] [--models 2] [--runs 1]
                                        [--json PATH] [--keep DIR]

One generated workspace (bench/workspace_gen.py) is copied `--workspaces` times;
each copy has its own cache, so every build exports for real. They build in turn
(`doit -n 1 export`, the server on), then, once every server has warmed its
spare child (its steady state between builds), the resident memory of every
export server and its children is summed: RSS, and PSS from
/proc/<pid>/smaps_rollup (pages shared by a server and its forks counted once).

- before: each workspace gets a runtime folder of its own (RULES_KERAS_RUNTIME_DIR),
  which is how servers were laid out when they lived in <workspace>/.rules_keras/.
- after: one runtime folder, shared, as by default.

Every server it started is stopped at the end. It is a measurement: it exits 2
only when a build fails or a server is missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workspace_gen import generate, subprocess_env

from rules.execution.server import client as server_client
from rules.execution.server.protocol import read_info
from rules.execution.server.runtime import servers_in

SPARE_WAIT_S = 120.0
MODES = ("before", "after")


class BenchError(Exception):
    pass


@dataclass
class Sample:
    """One mode's memory after the last build."""

    servers: int
    processes: int
    rss_mb: float
    pss_mb: float | None
    build_seconds: list[float] = field(default_factory=list)


def _doit(ws: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"doit {' '.join(args)} in {ws} failed:\n{proc.stdout}{proc.stderr}")
    return seconds, proc.stderr


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return found


def _memory(pid: int) -> tuple[int, int | None]:
    """(RSS, PSS) in kB; PSS is None where smaps_rollup is not readable."""
    rss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    except OSError:
        return 0, 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return rss, int(line.split()[1])
    except OSError:
        pass
    return rss, None


def _server_pids(folders: list[Path]) -> list[int]:
    pids = []
    for folder in folders:
        for paths in servers_in(folder):
            info = read_info(paths)
            if info and isinstance(info.get("pid"), int):
                pids.append(info["pid"])
    return pids


def _wait_for_spares(folders: list[Path]) -> None:
    """Every server's spare child warmed up: what a server holds between builds."""
    deadline = time.monotonic() + SPARE_WAIT_S
    for folder in folders:
        for paths in servers_in(folder):
            while True:
                status = server_client.request_status(paths, timeout=10.0) or {}
                if status.get("spare") == "ready" and not status.get("running"):
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{paths.socket}: no warm spare after {SPARE_WAIT_S:g}s")
                time.sleep(0.2)


def measure(folders: list[Path]) -> Sample:
    pids = _server_pids(folders)
    everyone = [*pids, *(c for pid in pids for c in _children(pid))]
    rss, pss, pss_ok = 0, 0, True
    for pid in everyone:
        r, p = _memory(pid)
        rss += r
        if p is None:
            pss_ok = False
        else:
            pss += p
    return Sample(len(pids), len(everyone), rss / 1024, pss / 1024 if pss_ok else None)


def run_mode(mode: str, template: Path, work: Path, count: int) -> Sample:
    base = work / mode
    folders = ([base / "rt"] if mode == "after"
               else [base / f"rt{i}" for i in range(count)])
    build_seconds = []
    try:
        for i in range(count):
            ws = base / f"ws{i}"
            shutil.copytree(template, ws)
            env = subprocess_env(
                RULES_KERAS_CACHE_DIR=str(base / f"cache{i}"),
                RULES_KERAS_RUNTIME_DIR=str(folders[min(i, len(folders) - 1)]),
                RULES_KERAS_SERVER="1",
                # Whatever happens to this script, they do not stay long.
                RULES_KERAS_SERVER_IDLE_TIMEOUT="600",
            )
            seconds, stderr = _doit(ws, env, "-n", "1", "export")
            if "export server" not in stderr or "warning" in stderr:
                raise BenchError(f"{mode}, ws{i}: the build did not use a server:\n{stderr}")
            build_seconds.append(seconds)
            print(f"{mode}: built ws{i} in {seconds:.1f} s", file=sys.stderr, flush=True)
        _wait_for_spares(folders)
        sample = measure(folders)
        sample.build_seconds = build_seconds
        return sample
    finally:
        for folder in folders:
            for paths in servers_in(folder) if folder.is_dir() else []:
                server_client.stop(paths)


def report(samples: dict[str, list[Sample]], count: int, models: int) -> str:
    def median(mode: str, attr: str) -> float:
        values = [getattr(s, attr) for s in samples[mode]]
        return statistics.median(values) if None not in values else float("nan")

    lines = [f"{count} workspaces of {models} models, built in turn; memory of every export "
             "server and its children after the last build (spares warm), median of "
             f"{len(samples['before'])} runs",
             "", "mode | servers | processes | RSS MB | PSS MB | builds s (sum)",
             "--- | --- | --- | --- | --- | ---"]
    for mode in MODES:
        runs = samples[mode]
        builds = statistics.median(sum(s.build_seconds) for s in runs)
        lines.append(f"{mode} | {runs[0].servers} | {runs[0].processes} | "
                     f"{median(mode, 'rss_mb'):.0f} | {median(mode, 'pss_mb'):.0f} | "
                     f"{builds:.1f}")
    for attr in ("rss_mb", "pss_mb"):
        ratio = median("before", attr) / median("after", attr)
        lines.append(f"{attr[:3].upper()} before/after: {ratio:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspaces", type=int, default=5)
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args(argv)
    # Short: the runtime folders hold sockets (sockaddr_un is about 100 bytes).
    work = args.keep or Path(tempfile.mkdtemp(prefix="rkb", dir="/tmp"))
    samples: dict[str, list[Sample]] = {mode: [] for mode in MODES}
    try:
        template = work / "template"
        generate(template, args.models, work / "spare")
        for run in range(args.runs):
            for mode in MODES:
                sample = run_mode(mode, template, work / f"run{run}", args.workspaces)
                print(f"run {run + 1}, {mode}: {sample}", file=sys.stderr, flush=True)
                samples[mode].append(sample)
            if not args.keep:
                shutil.rmtree(work / f"run{run}", ignore_errors=True)
    except BenchError as err:
        print(f"benchmark broken: {err}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(report(samples, args.workspaces, args.models))
    if args.json:
        args.json.write_text(json.dumps({m: [asdict(s) for s in v] for m, v in samples.items()},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
