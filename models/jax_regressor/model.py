"""A functional MLP regressor; backend-agnostic code, built and exported under JAX."""

from __future__ import annotations

import keras

FEATURES = 6


def build_model() -> keras.Model:
    """Factory: two hidden layers, one linear output."""
    inputs = keras.Input(shape=(FEATURES,), dtype="float32", name="features")
    x = keras.layers.Dense(32, activation="gelu", name="hidden_1")(inputs)
    x = keras.layers.Dense(32, activation="gelu", name="hidden_2")(x)
    outputs = keras.layers.Dense(1, name="prediction")(x)
    return keras.Model(inputs, outputs, name="jax_regressor")
