"""Train the CNN briefly on synthetic digit-like images (one blob pattern per class)."""

from __future__ import annotations

import keras
import numpy as np

from models.mnist.model import IMAGE_SHAPE, NUM_CLASSES

# The dataset is fixed by this constant rather than by the target's seed, so it is
# part of this file's source: the target's seed (applied by rules_keras through
# keras.utils.set_random_seed) drives only weight initialisation and shuffling.
DATA_SEED = 0
NUM_EXAMPLES = 1000
BLOBS_PER_CLASS = 2


def make_dataset(
    rng: np.random.RandomState, num_examples: int = NUM_EXAMPLES
) -> tuple[np.ndarray, np.ndarray]:
    """Images of two jittered Gaussian blobs at class-specific places, plus noise."""
    height, width, _ = IMAGE_SHAPE
    # The class patterns are drawn first so that they do not depend on num_examples.
    centers = rng.uniform(6, 22, size=(NUM_CLASSES, BLOBS_PER_CLASS, 2))
    labels = rng.randint(0, NUM_CLASSES, size=num_examples)
    rows, cols = np.mgrid[0:height, 0:width].astype("float32")
    images = rng.uniform(0.0, 0.2, size=(num_examples, height, width)).astype("float32")
    for blob in range(BLOBS_PER_CLASS):
        jittered = centers[labels, blob] + rng.normal(scale=1.0, size=(num_examples, 2))
        d2 = (rows[None] - jittered[:, 0, None, None]) ** 2 + (
            cols[None] - jittered[:, 1, None, None]
        ) ** 2
        images += np.exp(-d2 / (2 * 2.0**2)).astype("float32")
    images = np.clip(images, 0.0, 1.0)[..., None]
    return images, labels.astype("int32")


def fit(model: keras.Model) -> None:
    """Train function: two epochs of sparse categorical cross-entropy, in place."""
    x, y = make_dataset(np.random.RandomState(DATA_SEED))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=50, epochs=2, verbose=0)
