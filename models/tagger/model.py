"""Subclassed multi-label tagger: 16 features in, one independent probability per tag out."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from models.common.layers import ResidualDense

NUM_FEATURES = 16
NUM_TAGS = 6


@keras.saving.register_keras_serializable(package="rules_keras_examples")
class Tagger(keras.Model):
    """Projects the features, refines them with residual blocks, scores every tag.

    Args:
        num_tags: number of independent tags; the output has one sigmoid per tag.
        width: width of the residual stream.
        depth: number of ResidualDense blocks.
    """

    def __init__(self, num_tags: int = NUM_TAGS, width: int = 32, depth: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_tags = num_tags
        self.width = width
        self.depth = depth
        self.project = keras.layers.Dense(width, activation="relu", name="project")
        self.blocks = [ResidualDense(hidden=2 * width, name=f"block_{i}") for i in range(depth)]
        self.norm = keras.layers.LayerNormalization(name="norm")
        self.head = keras.layers.Dense(num_tags, activation="sigmoid", name="head")

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = self.project(inputs)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update({"num_tags": self.num_tags, "width": self.width, "depth": self.depth})
        return config


def build_model() -> keras.Model:
    """Factory: a Tagger whose variables exist, ready for ``load_weights``."""
    model = Tagger(name="tagger")
    # A subclassed model has no variables until its first call, and load_weights
    # needs them to exist; one dummy row creates every variable.
    model(np.zeros((1, NUM_FEATURES), dtype="float32"))
    return model
