"""Run a keras_train job: seed, build, train in place, save the weights."""

from __future__ import annotations

from typing import Any

from rules.core.job import TrainJob
from rules.execution.failures import JobFailure, import_ref, user_traceback
from rules.execution.model_loading import build_model


def train(job: TrainJob, out: str) -> dict[str, Any]:
    import keras

    keras.utils.set_random_seed(job.seed)
    model = build_model(job.factory, job.weights)
    fit = import_ref(job.train, "train")
    try:
        fit(model)  # type: ignore[operator]
    except Exception as err:
        raise JobFailure(
            "TrainError",
            f"train function {job.train!r} raised {type(err).__name__}: {err}",
            user_traceback(err),
        ) from err
    model.save_weights(out)
    return {"seed": job.seed, "backend": job.backend}
