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
        _check_format(weights)
        try:
            model.load_weights(weights)
        except Exception as err:
            raise JobFailure(
                "WeightsMismatch",
                f"weights {weights} do not fit the model built by "
                f"{factory!r}: {_weights_problem(err)}",
            ) from err
    return model


# What each weights file must start with: Keras writes .weights.h5 as HDF5 (its
# signature at offset 0) and .keras as a zip archive.
_SIGNATURES = {
    ".h5": (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    ".keras": (b"PK\x03\x04", "a zip archive"),
}


def _check_format(weights: str) -> None:
    """Name a file that is not weights at all, before Keras reports it as a misfit."""
    for suffix, (magic, what) in _SIGNATURES.items():
        if weights.endswith(suffix):
            try:
                with open(weights, "rb") as handle:
                    head = handle.read(len(magic))
            except OSError as err:
                raise JobFailure("WeightsUnreadable", f"weights {weights}: {err}") from err
            if head != magic:
                raise JobFailure(
                    "WeightsNotWeights",
                    f"weights {weights} is not {what}, as a {suffix} file must be; was it "
                    "saved with model.save_weights() / model.save(), or replaced by something "
                    "else (a Git LFS pointer, an HTML error page)?",
                )


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
