"""One model with >= 500 MB of weights: cold build against Keras's own export, restore against cp.

    python bench/bench_big.py [--width 8192] [--runs 3] [--server on|off]

The workspace holds one MLP (features[None, W] -> Dense(W) -> Dense(W) -> Dense(8)); at
the default W = 8192 that is 134M parameters: a 537 MB weights file and a 1.07 GB
SavedModel. Its weights are written once, by a separate process. Each run, in turn (so
that load on a shared machine hits every figure alike), with no export server running
and an empty cache (the first run also lists the environment's toolchain, once):

- keras: a fresh `python` that builds the model, loads the weights and calls
  `model.export(...)`: the baseline of issue 14 goal 4;
- cold: `doit export`, which also verifies the export in its runtime, hashes it,
  stores it in the local cache and publishes it; then `doit server_stop` (untimed);
- first no-op, then a second (steady) no-op: issue 14 goal 3 says they cost the same;
- cp: `cp -r` of the published artifact to a new folder: the restore's baseline;
- restore: `doit export` after `rm -rf artifacts`, from the local cache.

Prints each figure's median (min-max) and the ratios cold/keras (goal <= 1.3) and
restore/cp (goal <= 1.5). Misses print MISS; exit 0.
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

from workspace_gen import REPO_ROOT, subprocess_env

from rules.reporter import parse_summary

PACKAGE = "models_big"

_MODEL_PY = '''\
"""A wide MLP whose weights are over 500 MB."""

import keras

WIDTH = {width}


def build_model():
    inputs = keras.Input(shape=(WIDTH,), dtype="float32", name="features")
    x = keras.layers.Dense(WIDTH, activation="relu", name="wide_0")(inputs)
    x = keras.layers.Dense(WIDTH, activation="relu", name="wide_1")(x)
    return keras.Model(inputs, keras.layers.Dense(8, name="scores")(x), name="big")
'''

_BUILD_PY = '''\
from rules import keras_export, keras_model

keras_model(name="model", factory="models_big.big.model:build_model",
            weights="model.weights.h5")
keras_export(name="serving", model=":model")
'''

_WEIGHTS = """\
import sys
import keras
from models_big.big.model import build_model
keras.utils.set_random_seed(0)
build_model().save_weights(sys.argv[1])
"""

# The baseline: what a user's own script costs, import included.
_KERAS_EXPORT = """\
import sys
import keras
from models_big.big.model import build_model
model = build_model()
model.load_weights(sys.argv[1])
model.export(sys.argv[2], format="tf_saved_model")
"""


def make_workspace(root: Path, width: int) -> Path:
    package = root / PACKAGE / "big"
    package.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "dodo.py", root / "dodo.py")
    (root / PACKAGE / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text(_MODEL_PY.format(width=width))
    (package / "BUILD.py").write_text(_BUILD_PY)
    python(root, _WEIGHTS, str(package / "model.weights.h5"))
    return root


def python(ws: Path, script: str, *args: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ws, env=subprocess_env(),
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"python script failed:\n{proc.stderr[-3000:]}")
    return elapsed


def doit(ws: Path, env: dict[str, str], *args: str, expect: str = "") -> float:
    started = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).with_name("doit")), *args], cwd=ws, env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"doit {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    if expect:
        summary = parse_summary(proc.stdout)
        if summary is None or summary.get(expect) != 1:
            raise SystemExit(f"doit {' '.join(args)}: expected 1 {expect}:\n{proc.stdout}")
    return elapsed


def cp(src: Path, dest: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dest)], check=True)
    return time.perf_counter() - started


def one_run(ws: Path, scratch: Path, server: str) -> dict[str, float]:
    cache = scratch / "cache"
    # An empty cache, but the environment's toolchain listing (kept beside the cache, made
    # once per Python environment, not per model) survives, as it does for a user.
    for path in (ws / "artifacts", ws / ".rules_keras", cache / "ac", cache / "cas",
                 scratch / "keras", scratch / "cp"):
        shutil.rmtree(path, ignore_errors=True)
    # A runtime folder of its own: the servers it starts and stops are its own, not the
    # machine's shared one (rules.execution.server.runtime).
    env = subprocess_env(RULES_KERAS_CACHE_DIR=str(cache), RULES_KERAS_SERVER=server,
                         RULES_KERAS_RUNTIME_DIR=str(scratch / "run"))
    weights = ws / PACKAGE / "big" / "model.weights.h5"
    times = {"keras": python(ws, _KERAS_EXPORT, str(weights), str(scratch / "keras"))}
    try:
        times["cold"] = doit(ws, env, "export", expect="built")
    finally:
        doit(ws, env, "server_stop")
    times["first no-op"] = doit(ws, env, "export", expect="up to date")
    times["no-op"] = doit(ws, env, "export", expect="up to date")
    times["cp -r"] = cp(ws / "artifacts" / PACKAGE / "big" / "serving", scratch / "cp")
    shutil.rmtree(ws / "artifacts")
    times["restore"] = doit(ws, env, "export", expect="restored")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server", choices=("on", "off"), default="on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-big-") as tmp:
        ws = make_workspace(Path(tmp) / "ws", args.width)
        size = (ws / PACKAGE / "big" / "model.weights.h5").stat().st_size
        print(f"weights: {size / 1e6:.0f} MB; server {args.server}; {args.runs} runs")
        runs = []
        for i in range(args.runs):
            runs.append(one_run(ws, Path(tmp), "1" if args.server == "on" else "0"))
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in runs[-1].items()),
                  flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    for name in med:
        values = [r[name] for r in runs]
        print(f"{name:>12}: {med[name]:6.2f} s  ({min(values):.2f}-{max(values):.2f})")
    for what, num, den, goal in (("cold / keras", "cold", "keras", 1.3),
                                 ("restore / cp -r", "restore", "cp -r", 1.5),
                                 ("first no-op / no-op", "first no-op", "no-op", 1.2)):
        ratio = statistics.median(r[num] / r[den] for r in runs)
        print(f"{what:>20}: {ratio:5.2f}x  goal <= {goal}x  {'met' if ratio <= goal else 'MISS'}")


if __name__ == "__main__":
    main()
