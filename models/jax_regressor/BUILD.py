"""Targets for the MLP regressor, trained and exported on the JAX backend."""

from __future__ import annotations

from rules import keras_export, keras_model, keras_train

keras_train(
    name="jax_regressor_weights",
    factory="models.jax_regressor.model:build_model",
    train="models.jax_regressor.train:fit",
    backend="jax",
    seed=0,
    doc="Train the MLP regressor under JAX on a synthetic nonlinear target.",
)

keras_model(
    name="jax_regressor",
    factory="models.jax_regressor.model:build_model",
    weights=":jax_regressor_weights",
    backend="jax",
    doc="MLP regressor on the JAX backend with its trained weights.",
)

keras_export(
    name="jax_regressor_serving",
    model=":jax_regressor",
    format="tf_saved_model",
    doc="SavedModel of the regressor via jax2tf: serve(float32[None, 6]) -> prediction [None, 1].",
)

keras_export(
    name="jax_regressor_onnx",
    model=":jax_regressor",
    format="onnx",
    doc="ONNX of the regressor via jax2onnx, checked in ONNX Runtime: features [N, 6] -> [N, 1].",
)
