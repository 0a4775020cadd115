"""Measure what doit's DB backends keep when two `doit` processes share one DB file.

rules_keras never decides anything from doit's DB (manifests beside the
artifacts are the truth), but doit still writes one, and a backend that
corrupts or loses entries under concurrency would make `doit info` lie. This
script runs two real doit processes at once, each executing its own half of
N tasks against the same dep file, then counts the tasks the DB remembers.

    python bench/bench_doit_db.py [--tasks 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

DODO = textwrap.dedent(
    """
    DOIT_CONFIG = {{"backend": "{backend}", "dep_file": "{dep_file}", "verbosity": 0}}

    def task_t():
        for i in range({tasks}):
            yield {{"name": str(i), "actions": [(lambda: {{"i": i}})], "file_dep": ["input.txt"]}}
    """
)

COUNT = textwrap.dedent(
    """
    import sys
    from doit.dependency import {cls} as DB, JSONCodec
    db = DB(sys.argv[1], codec=JSONCodec())
    print(sum(1 for i in range({tasks}) if db.get("t:" + str(i), "input.txt") is not None))
    """
)

BACKENDS = {"dbm": "DbmDB", "json": "JsonDB", "sqlite3": "SqliteDB"}


def run_once(backend: str, tasks: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        dep_file = ws / "state.db"
        (ws / "input.txt").write_text("x")
        (ws / "dodo.py").write_text(
            DODO.format(backend=backend, dep_file=dep_file, tasks=tasks)
        )
        halves = [
            [f"t:{i}" for i in range(0, tasks // 2)],
            [f"t:{i}" for i in range(tasks // 2, tasks)],
        ]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "doit", *names],
                cwd=ws, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            for names in halves
        ]
        for proc in procs:
            proc.wait(timeout=300)
        script = COUNT.format(cls=BACKENDS[backend], tasks=tasks)
        try:
            out = subprocess.run(
                [sys.executable, "-c", script, str(dep_file)],
                capture_output=True, text=True, timeout=60, check=True,
            )
        except subprocess.CalledProcessError:
            return -1  # the DB could not even be read back: corrupt
        return int(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import dbm

    with tempfile.TemporaryDirectory() as tmp, dbm.open(str(Path(tmp) / "probe"), "c") as db:
        print(f"doit's 'dbm' backend resolves to {type(db).__module__} here")
    print(f"two concurrent doit processes, {args.tasks} tasks split between them, "
          f"{args.runs} runs")
    print(f"{'backend':10} {'kept (median)':>14} {'runs':>20}")
    for backend in BACKENDS:
        kept = [run_once(backend, args.tasks) for _ in range(args.runs)]
        print(f"{backend:10} {statistics.median(kept):>10}/{args.tasks} {kept!s:>20}")


if __name__ == "__main__":
    main()
