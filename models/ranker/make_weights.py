"""Regenerate the checked-in ranker.weights.h5: ``python -m models.ranker.make_weights``.

Run from the workspace root. The output is deterministic for a given Keras and
TensorFlow version, so a rerun that changes the file means the model, the data or
the toolchain changed.
"""

from __future__ import annotations

import os

# The weights are declared for the TensorFlow backend in BUILD.py; pin it before Keras
# is imported so a KERAS_BACKEND left in the environment cannot change the result.
os.environ["KERAS_BACKEND"] = "tensorflow"

from pathlib import Path

import keras
import numpy as np

from models.ranker.model import FEATURES, build_model

SEED = 0
NUM_EXAMPLES = 2048
OUTPUT = Path(__file__).parent / "ranker.weights.h5"


def make_dataset(rng: np.random.RandomState) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random user and item features; the target is a hidden bilinear affinity plus noise."""
    user = rng.normal(size=(NUM_EXAMPLES, FEATURES)).astype("float32")
    item = rng.normal(size=(NUM_EXAMPLES, FEATURES)).astype("float32")
    affinity = rng.normal(scale=0.5, size=(FEATURES, FEATURES)).astype("float32")
    score = np.einsum("ni,ij,nj->n", user, affinity, item)[:, None]
    score += rng.normal(scale=0.1, size=score.shape)
    return {"user": user, "item": item}, score.astype("float32")


def main() -> None:
    keras.utils.set_random_seed(SEED)
    model = build_model()
    x, y = make_dataset(np.random.RandomState(SEED))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2), loss="mse")
    history = model.fit(x, y, batch_size=64, epochs=8, verbose=0)
    # save_weights on a compiled model also writes the optimizer's slots, which
    # load_weights into a fresh model silently skips; copying into an uncompiled
    # model keeps the checked-in file to just the serving variables.
    serving = build_model()
    serving.set_weights(model.get_weights())
    serving.save_weights(OUTPUT)
    print(f"wrote {OUTPUT} (final loss {history.history['loss'][-1]:.4f})")


if __name__ == "__main__":
    main()
