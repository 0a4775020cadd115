"""rules_keras: Bazel-style build rules for Keras model exports.

BUILD.py files import the rule functions from here. Nothing imported by this
module may import TensorFlow, Keras or JAX: loading and analysis stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rules.loading.rules import keras_export, keras_model, keras_train
from rules.loading.specs import endpoint, tensor_spec

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rules.workspace import Workspace

__all__ = [
    "Workspace",
    "__version__",
    "endpoint",
    "keras_export",
    "keras_model",
    "keras_train",
    "tensor_spec",
]


def __getattr__(name: str) -> Any:
    # Workspace pulls in doit; workers import `rules` too and never need it.
    if name == "Workspace":
        from rules.workspace import Workspace

        return Workspace
    raise AttributeError(name)
