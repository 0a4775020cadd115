"""Targets for the sentiment classifier, whose vocabulary is a data file."""

from __future__ import annotations

from rules import endpoint, keras_export, keras_model, keras_train, tensor_spec

keras_train(
    name="sentiment_weights",
    factory="models.sentiment.model:build_model",
    train="models.sentiment.train:fit",
    backend="tensorflow",
    seed=0,
    data=["vocab.txt"],
    doc="Train the sentiment classifier on synthetic sentences drawn from vocab.txt.",
)

keras_model(
    name="sentiment",
    factory="models.sentiment.model:build_model",
    weights=":sentiment_weights",
    backend="tensorflow",
    data=["vocab.txt"],
    doc="String-input sentiment classifier with its trained weights.",
)

keras_export(
    name="sentiment_serving",
    model=":sentiment",
    format="tf_saved_model",
    endpoints=[endpoint("serve", inputs=[tensor_spec((None,), "string", name="text")])],
    # The vocabulary lives in a lookup table, not a variable; tracking the layer
    # makes the archive carry it explicitly.
    track=["text_vectorization"],
    doc="SavedModel of the sentiment model: serve(string[None]) -> P(positive) [None, 1].",
)
