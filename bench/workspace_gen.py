"""Generate a benchmark workspace: N small Keras models declared in BUILD.py files.

Layout of the generated workspace (`root`):

    dodo.py                          copy of the repository's dodo.py
    models_bench/__init__.py
    models_bench/m000/__init__.py
    models_bench/m000/model.py       a small functional MLP, sized by its index
    models_bench/m000/BUILD.py       keras_model(weights="model.weights.h5") + keras_export
    models_bench/m000/model.weights.h5
    ...

Weights are written by one subprocess that imports Keras once, with a fixed
seed, so generating 100 models costs one TensorFlow import rather than 100.
Alternative weights for the models a benchmark modifies go to `spare_dir`,
outside the workspace, so they never enter an action key.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "models_bench"
INPUT_DIM = 16
WEIGHTS = "model.weights.h5"
EXPORT_NAME = "serving"
SEED = 0
REPO_ROOT = Path(__file__).resolve().parents[1]

_MODEL_PY = '''\
"""Benchmark model {index:03d}: an MLP on float32[None, {input_dim}] -> [None, {outputs}]."""

from __future__ import annotations

import keras

HIDDEN = ({h1}, {h2})
OUTPUTS = {outputs}


def build_model() -> keras.Model:
    """Factory: Dense layers sized by this model's index so no two models are identical."""
    inputs = keras.Input(shape=({input_dim},), dtype="float32", name="features")
    x = inputs
    for i, width in enumerate(HIDDEN):
        x = keras.layers.Dense(width, activation="relu", name=f"hidden_{{i}}")(x)
    outputs = keras.layers.Dense(OUTPUTS, name="scores")(x)
    return keras.Model(inputs, outputs, name="bench_{index:03d}")
'''

_BUILD_PY = '''\
"""Benchmark model {index:03d}: checked-in weights, exported with the default endpoint."""

from __future__ import annotations

from rules import keras_export, keras_model

keras_model(
    name="model",
    factory="{module}.model:build_model",
    weights="{weights}",
    doc="MLP {h1}-{h2}-{outputs} with generated weights.",
)

keras_export(
    name="{export}",
    model=":model",
    doc="SavedModel: default serve(float32[None, {input_dim}]) -> [None, {outputs}].",
)
'''

# Runs in one subprocess: argv = root, n, spare_dir, seed, then the indices that need spares.
_WEIGHTS_SCRIPT = """\
import importlib, sys
from pathlib import Path
import keras

root, n, spare, seed = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
spares = {int(i) for i in sys.argv[5:]}
for index in range(n):
    module = importlib.import_module(f"models_bench.m{index:03d}.model")
    keras.utils.set_random_seed(seed + index)
    keras.backend.clear_session()
    model = module.build_model()
    model.save_weights(root / "models_bench" / f"m{index:03d}" / "model.weights.h5")
    if index in spares:
        keras.utils.set_random_seed(seed + 100_000 + index)
        keras.backend.clear_session()
        other = module.build_model()
        other.save_weights(spare / f"m{index:03d}.alt.weights.h5")
"""


@dataclass(frozen=True)
class BenchModel:
    """One generated model: where its files are and the label of its export target."""

    index: int
    module: str
    package_dir: Path
    weights: Path
    label: str


def _sizes(index: int) -> tuple[int, int, int]:
    """Hidden widths and output count; small, and varied so exports are not identical."""
    return 16 + (index % 8) * 4, 8 + (index % 5) * 4, 1 + index % 4


def model_for(root: Path, index: int) -> BenchModel:
    package = f"{PACKAGE}/m{index:03d}"
    return BenchModel(
        index=index,
        module=package.replace("/", "."),
        package_dir=root / package,
        weights=root / package / WEIGHTS,
        label=f"//{package}:{EXPORT_NAME}",
    )


def spare_weights(spare_dir: Path, index: int) -> Path:
    """Alternative weights for model `index` (same architecture, other values)."""
    return spare_dir / f"m{index:03d}.alt.weights.h5"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment every benchmark subprocess gets: TensorFlow backend, quiet TF logs."""
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env["KERAS_BACKEND"] = "tensorflow"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


def generate(
    root: Path, n: int, spare_dir: Path, spare_indices: tuple[int, ...] = ()
) -> list[BenchModel]:
    """Write a workspace of `n` models under `root` (which must not exist or be empty)."""
    if n < 1 or n > 1000:
        raise ValueError(f"n must be between 1 and 1000. Received: n={n}")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; pass a new or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    spare_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dodo.py", root / "dodo.py")
    (root / PACKAGE).mkdir()
    (root / PACKAGE / "__init__.py").write_text(
        '"""Generated benchmark models; see bench/workspace_gen.py."""\n'
    )
    models = []
    for index in range(n):
        model = model_for(root, index)
        h1, h2, outputs = _sizes(index)
        fields = dict(
            index=index, module=model.module, weights=WEIGHTS, export=EXPORT_NAME,
            input_dim=INPUT_DIM, h1=h1, h2=h2, outputs=outputs,
        )
        model.package_dir.mkdir()
        (model.package_dir / "__init__.py").write_text("")
        (model.package_dir / "model.py").write_text(_MODEL_PY.format(**fields))
        (model.package_dir / "BUILD.py").write_text(_BUILD_PY.format(**fields))
        models.append(model)
    write_weights(root, n, spare_dir, spare_indices)
    return models


def write_weights(root: Path, n: int, spare_dir: Path, spare_indices: tuple[int, ...]) -> None:
    """Save every model's weights (and the spares) from one process that imports Keras once."""
    args = [str(root), str(n), str(spare_dir), str(SEED), *map(str, spare_indices)]
    proc = subprocess.run(
        [sys.executable, "-c", _WEIGHTS_SCRIPT, *args],
        cwd=root,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        raise RuntimeError(f"writing the weights failed (exit {proc.returncode}):\n{tail}")
