"""Sentiment classifier: raw strings in, probability of a positive review out."""

from __future__ import annotations

from pathlib import Path

import keras

# Declared as `data` in BUILD.py, so editing the vocabulary rebuilds every target.
VOCAB_PATH = Path(__file__).parent / "vocab.txt"
SEQUENCE_LENGTH = 16
VECTORIZER_NAME = "text_vectorization"


def load_vocabulary(path: Path = VOCAB_PATH) -> list[str]:
    """One token per line; blank lines are ignored."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_model() -> keras.Model:
    """Factory: TextVectorization -> masked mean of embeddings -> sigmoid."""
    vocabulary = load_vocabulary()
    # Rank-1 string input, one review per element: it reloads as a plain string[None]
    # signature, so callers pass a list of sentences without an extra axis.
    inputs = keras.Input(shape=(), dtype="string", name="text")
    # The vocabulary is fixed at construction, not adapted: it is not a weight, so
    # load_weights would not restore it, and the data file is its single source.
    tokens = keras.layers.TextVectorization(
        vocabulary=vocabulary,
        output_mode="int",
        output_sequence_length=SEQUENCE_LENGTH,
        name=VECTORIZER_NAME,
    )(inputs)
    # Index 0 is padding and 1 is out-of-vocabulary; the mask drops padding from the mean.
    x = keras.layers.Embedding(len(vocabulary) + 2, 8, mask_zero=True, name="embedding")(tokens)
    x = keras.layers.GlobalAveragePooling1D(name="mean")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="positive")(x)
    return keras.Model(inputs, outputs, name="sentiment")
