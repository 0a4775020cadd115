"""Train the sentiment classifier on synthetic sentences drawn from its vocabulary."""

from __future__ import annotations

import keras
import numpy as np

from models.sentiment.model import load_vocabulary

# The dataset is fixed by this constant rather than by the target's seed, so it is
# part of this file's source: the target's seed (applied by rules_keras through
# keras.utils.set_random_seed) drives only weight initialisation and shuffling.
DATA_SEED = 0
NUM_EXAMPLES = 1024
# The vocabulary file lists these first, in this order: 8 positive, 8 negative words.
NUM_POSITIVE = 8
NUM_NEGATIVE = 8


def make_dataset(
    rng: np.random.RandomState, num_examples: int = NUM_EXAMPLES
) -> tuple[np.ndarray, np.ndarray]:
    """Sentences of neutral filler plus sentiment words; the label is the majority polarity."""
    vocabulary = load_vocabulary()
    positive = vocabulary[:NUM_POSITIVE]
    negative = vocabulary[NUM_POSITIVE : NUM_POSITIVE + NUM_NEGATIVE]
    neutral = vocabulary[NUM_POSITIVE + NUM_NEGATIVE :]
    sentences, labels = [], []
    for _ in range(num_examples):
        label = rng.randint(2)
        majority, minority = (positive, negative) if label else (negative, positive)
        n_major = rng.randint(1, 4)
        words = list(rng.choice(majority, size=n_major))
        words += list(rng.choice(minority, size=rng.randint(0, n_major)))
        words += list(rng.choice(neutral, size=rng.randint(3, 9)))
        rng.shuffle(words)
        sentences.append(" ".join(words))
        labels.append(label)
    return np.array(sentences, dtype=object), np.array(labels, dtype="float32")


def fit(model: keras.Model) -> None:
    """Train function: a few epochs of binary cross-entropy, in place."""
    x, y = make_dataset(np.random.RandomState(DATA_SEED))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-2),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=5, verbose=0)
