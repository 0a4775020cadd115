"""Targets for the subclassed tagger, the only user of models.common."""

from __future__ import annotations

from rules import endpoint, keras_export, keras_model, keras_train, tensor_spec

keras_train(
    name="tagger_weights",
    factory="models.tagger.model:build_model",
    train="models.tagger.train:fit",
    backend="tensorflow",
    seed=0,
    doc="Train the subclassed multi-label tagger on synthetic hyperplane tags.",
)

keras_model(
    name="tagger",
    factory="models.tagger.model:build_model",
    weights=":tagger_weights",
    backend="tensorflow",
    doc="Subclassed tagger (ResidualDense blocks) with its trained weights.",
)

keras_export(
    name="tagger_serving",
    model=":tagger",
    format="tf_saved_model",
    # A subclassed model has no Input layers to derive a signature from.
    endpoints=[endpoint("serve", inputs=[tensor_spec((None, 16), "float32")])],
    doc="SavedModel of the tagger: serve(float32[None, 16]) -> tag probabilities [None, 6].",
)
