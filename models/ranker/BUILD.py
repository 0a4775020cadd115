"""Targets for the two-tower ranker: dict inputs, two endpoints, checked-in weights."""

from __future__ import annotations

from rules import endpoint, keras_export, keras_model, tensor_spec

# One positional argument, a dict keyed by the model's Input names. The spec names
# become the serving_default argument names; unnamed, TensorFlow calls them a_0, a_0_1.
_FEATURES = [
    {
        "user": tensor_spec((None, 8), name="user"),
        "item": tensor_spec((None, 8), name="item"),
    }
]

keras_model(
    name="ranker",
    factory="models.ranker.model:build_model",
    # Produced by `python -m models.ranker.make_weights`; rerun it after changing the model.
    weights="ranker.weights.h5",
    backend="tensorflow",
    doc="Two-tower ranker with BatchNormalization and checked-in weights.",
)

keras_export(
    name="ranker_serving",
    model=":ranker",
    format="tf_saved_model",
    endpoints=[
        endpoint("serve", inputs=_FEATURES, training=False),
        # Batch statistics make this deterministic, but every call also moves the
        # BatchNormalization moving averages stored in the SavedModel, changing what
        # later `serve` calls return. It is for debugging, not for serving traffic.
        endpoint("serve_training", inputs=_FEATURES, training=True),
    ],
    variable_collections={"trainable": "trainable_variables"},
    serving="ranker",
    doc="SavedModel of the ranker: serve and serve_training({user, item}) -> score [None, 1].",
)
