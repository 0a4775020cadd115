"""A small functional CNN classifying 28x28 grayscale images into 10 classes."""

from __future__ import annotations

import keras

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def build_model() -> keras.Model:
    """Factory: the classifier; softmax probabilities so the export serves them directly."""
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="float32", name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool_1")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv_2")(x)
    x = keras.layers.MaxPooling2D(name="pool_2")(x)
    # Flatten rather than global pooling: where the strokes are is what tells digits apart.
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mnist")
