"""Targets for the small CNN classifier, exported with the default endpoint."""

from __future__ import annotations

from rules import keras_export, keras_model, keras_train

keras_train(
    name="mnist_weights",
    factory="models.mnist.model:build_model",
    train="models.mnist.train:fit",
    backend="tensorflow",
    seed=0,
    doc="Train the CNN for two epochs on synthetic digit-like blob images.",
)

keras_model(
    name="mnist",
    factory="models.mnist.model:build_model",
    weights=":mnist_weights",
    backend="tensorflow",
    doc="28x28x1 CNN classifier with its trained weights.",
)

keras_export(
    name="mnist_serving",
    model=":mnist",
    format="tf_saved_model",
    doc="SavedModel of the CNN: default serve(float32[None, 28, 28, 1]) -> probs [None, 10].",
)
