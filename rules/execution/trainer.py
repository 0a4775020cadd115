"""Run a keras_train job: seed, build, train in place, save the weights."""

from __future__ import annotations

from typing import Any

from rules.execution.failures import JobFailure, import_ref, user_traceback
from rules.execution.model_loading import build_model
from rules.execution.protocol import Job


def train(job: Job) -> dict[str, Any]:
    import keras

    opts = job.options
    keras.utils.set_random_seed(int(opts["seed"]))
    model = build_model(job.factory, job.weights, opts.get("weights_display"))
    fit = import_ref(opts["train"], "train")
    try:
        fit(model)  # type: ignore[operator]
    except Exception as err:
        raise JobFailure(
            "TrainError",
            f"train function {opts['train']!r} raised {type(err).__name__}: {err}",
            user_traceback(err),
        ) from err
    model.save_weights(job.out)
    return {"seed": opts["seed"], "backend": job.backend}
