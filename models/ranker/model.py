"""A functional two-tower ranker: {"user": [N, 8], "item": [N, 8]} -> relevance score [N, 1]."""

from __future__ import annotations

import keras

FEATURES = 8
EMBEDDING = 16


def _tower(inputs: keras.KerasTensor, prefix: str) -> keras.KerasTensor:
    x = keras.layers.Dense(EMBEDDING, use_bias=False, name=f"{prefix}_dense")(inputs)
    # BatchNormalization rather than Dropout: in training mode it normalises with the
    # batch's own statistics, so the training=True endpoint is still deterministic.
    x = keras.layers.BatchNormalization(name=f"{prefix}_norm")(x)
    return keras.layers.Activation("relu", name=f"{prefix}_relu")(x)


def build_model() -> keras.Model:
    """Factory: the ranker; the score is a dot product of the towers plus an MLP correction."""
    user = keras.Input(shape=(FEATURES,), dtype="float32", name="user")
    item = keras.Input(shape=(FEATURES,), dtype="float32", name="item")
    user_vec = _tower(user, "user")
    item_vec = _tower(item, "item")
    affinity = keras.layers.Dot(axes=1, name="affinity")([user_vec, item_vec])
    joint = keras.layers.Concatenate(name="joint")([user_vec, item_vec])
    joint = keras.layers.Dense(EMBEDDING, activation="relu", name="mlp_hidden")(joint)
    correction = keras.layers.Dense(1, name="mlp_out")(joint)
    score = keras.layers.Add(name="score")([affinity, correction])
    return keras.Model({"user": user, "item": item}, score, name="ranker")
