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
    # Also published as <serving_root>/mnist/<version>/ when serving_root is set.
    serving="mnist",
    doc="SavedModel of the CNN: default serve(float32[None, 28, 28, 1]) -> probs [None, 10].",
)

keras_export(
    name="mnist_onnx",
    model=":mnist",
    format="onnx",
    format_options={"opset_version": 17},
    doc="ONNX of the CNN, checked in ONNX Runtime: image float32[N, 28, 28, 1] -> probs [N, 10].",
)

keras_export(
    name="mnist_litert",
    model=":mnist",
    format="litert",
    # Float16 weights halve the file for phones; the interpreter computes with
    # weights rounded to 11 significant bits, so the probabilities move by
    # 6e-5 here (measured), far above the float32 default of 1e-5.
    format_options={"optimizations": ["DEFAULT"], "target_spec": {"supported_types": ["float16"]}},
    tolerance=1e-3,
    doc="LiteRT (.tflite, float16 weights) of the CNN, checked in the LiteRT interpreter.",
)
