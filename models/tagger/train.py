"""Train the tagger briefly on synthetic multi-label data."""

from __future__ import annotations

import keras
import numpy as np

from models.tagger.model import NUM_FEATURES, NUM_TAGS

# The dataset is fixed by this constant rather than by the target's seed, so it is
# part of this file's source: the target's seed (applied by rules_keras through
# keras.utils.set_random_seed) drives only weight initialisation and shuffling.
DATA_SEED = 0
NUM_EXAMPLES = 1024


def make_dataset(
    rng: np.random.RandomState, num_examples: int = NUM_EXAMPLES
) -> tuple[np.ndarray, np.ndarray]:
    """Features from a normal; tag k is on when the features lie past hyperplane k."""
    # The hyperplanes are drawn first so that they do not depend on num_examples.
    planes = rng.normal(size=(NUM_FEATURES, NUM_TAGS)).astype("float32")
    offsets = rng.normal(scale=0.5, size=(NUM_TAGS,)).astype("float32")
    x = rng.normal(size=(num_examples, NUM_FEATURES)).astype("float32")
    y = (x @ planes + offsets > 0).astype("float32")
    return x, y


def fit(model: keras.Model) -> None:
    """Train function: a few epochs of binary cross-entropy, in place."""
    x, y = make_dataset(np.random.RandomState(DATA_SEED))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-3),
        loss="binary_crossentropy",
        metrics=["binary_accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=8, verbose=0)
