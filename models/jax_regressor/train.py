"""Train the regressor briefly on a synthetic smooth nonlinear target."""

from __future__ import annotations

import keras
import numpy as np

from models.jax_regressor.model import FEATURES

# The dataset is fixed by this constant rather than by the target's seed, so it is
# part of this file's source: the target's seed (applied by rules_keras through
# keras.utils.set_random_seed) drives only weight initialisation and shuffling.
DATA_SEED = 0
NUM_EXAMPLES = 2048


def make_dataset(
    rng: np.random.RandomState, num_examples: int = NUM_EXAMPLES
) -> tuple[np.ndarray, np.ndarray]:
    """y = sin of a projection plus a pairwise product plus noise."""
    # The target's parameters are drawn first so that they do not depend on num_examples.
    w = rng.normal(size=(FEATURES,)).astype("float32")
    x = rng.uniform(-1.0, 1.0, size=(num_examples, FEATURES)).astype("float32")
    y = np.sin(x @ w) + 0.5 * x[:, 0] * x[:, 1] + rng.normal(scale=0.05, size=num_examples)
    return x, y[:, None].astype("float32")


def fit(model: keras.Model) -> None:
    """Train function: a few epochs of mean squared error, in place."""
    x, y = make_dataset(np.random.RandomState(DATA_SEED))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2), loss="mse")
    model.fit(x, y, batch_size=64, epochs=20, verbose=0)
