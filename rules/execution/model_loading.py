"""Build a model from its factory and load its weights, naming what went wrong."""

from __future__ import annotations

import re
from typing import Any

from rules.execution.failures import JobFailure, import_ref, user_traceback


def build_model(factory: str, weights: str | None) -> Any:
    """Call the factory and load the weights (a workspace-relative path; the working
    directory is the workspace); failures name the factory or the weights file."""
    import keras

    fn = import_ref(factory, "factory")
    if not callable(fn):
        raise JobFailure("FactoryError", f"factory {factory!r} is not callable")
    try:
        model = fn()
    except Exception as err:
        raise JobFailure(
            "FactoryError",
            f"factory {factory!r} raised {type(err).__name__}: {err}",
            user_traceback(err),
        ) from err
    if not isinstance(model, keras.Model):
        raise JobFailure(
            "FactoryError",
            f"factory {factory!r} must return a keras.Model. Received: {type(model).__name__}",
        )
    if weights is not None:
        try:
            model.load_weights(weights)
        except Exception as err:
            raise JobFailure(
                "WeightsMismatch",
                f"weights {weights} do not fit the model built by "
                f"{factory!r}: {_weights_problem(err)}",
            ) from err
    return model


def _weights_problem(err: Exception) -> str:
    """The useful part of Keras's load error: which variable, which shapes.

    Keras prints whole variable values in this message, which buries the cause.
    """
    text = str(err)
    path = re.search(r"Target variable: <Variable path=([^,]+),", text)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    if shapes:
        where = f"variable {path.group(1)} " if path else "a variable "
        return f"{where}has shape {shapes.group(1)} in the model but {shapes.group(2)} in the file"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(err).__name__}: {first}"
