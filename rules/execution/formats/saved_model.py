"""tf_saved_model: export with Keras's ExportArchive, reload with TensorFlow, compare with Keras."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rules.core.faults import pause_point
from rules.core.job import ExportJob
from rules.core.specs import Endpoint
from rules.execution import output_digests
from rules.execution.failures import JobFailure, import_ref, user_traceback
from rules.execution.formats.common import default_endpoint, first_line, layer, tf_specs
from rules.execution.model_loading import build_model
from rules.execution.samples import for_job
from rules.execution.verify import check_endpoints, conclude


def export(job: ExportJob, out: str) -> dict[str, Any]:
    """Export, reload and check a SavedModel; returns the record stored in the manifest."""
    import tensorflow as tf
    from keras.export import ExportArchive

    model = build_model(job.factory, job.weights)
    archive = ExportArchive()
    archive.track(model)
    for layer_name in job.track:
        archive.track(layer(model, layer_name, "track"))

    endpoints = list(job.endpoints) or [default_endpoint(model)]
    # Before the export: a broken sample_inputs fails in a second, not after it.
    samples = for_job(job, model, endpoints)
    fns: dict[str, Callable[..., Any]] = {}
    extra: dict[str, Any] = {}
    if job.backend == "jax" and job.jax2tf_kwargs is not None:
        extra["jax2tf_kwargs"] = job.jax2tf_kwargs.thaw()
    for ep in endpoints:
        fn = _endpoint_fn(model, ep)
        fns[ep.name] = fn
        signature = [tf_specs(tree, tf) for tree in ep.inputs]
        try:
            archive.add_endpoint(ep.name, fn, input_signature=signature, **extra)
        except Exception as err:
            raise JobFailure(
                "SignatureError",
                f"endpoint {ep.name!r}: the input signature does not fit the model: "
                f"{type(err).__name__}: {first_line(err)}",
                user_traceback(err),
            ) from err
    for name, path in job.variable_collections:
        archive.add_variable_collection(name, _attribute(model, path))
    try:
        archive.write_out(out, verbose=False)
    except Exception as err:
        _blame_endpoint(archive, endpoints, err)
        raise JobFailure(
            "ExportError", f"writing the SavedModel failed: {type(err).__name__}: {err}",
            user_traceback(err),
        ) from err

    pause_point("export")
    output_digests.written(out)
    reloaded = tf.saved_model.load(out)
    reloaded_fns = {ep.name: getattr(reloaded, ep.name) for ep in endpoints}
    try:
        checks = check_endpoints(endpoints, fns, reloaded_fns, job.tolerance, samples)
    except Exception as err:
        raise JobFailure(
            "VerificationError",
            f"calling the endpoints on a sample input failed: {type(err).__name__}: "
            f"{first_line(err)}",
            user_traceback(err),
        ) from err
    bad = [c for c in checks if not c["ok"]]
    if bad:
        worst = max(bad, key=lambda c: c["max_abs_diff"])
        raise JobFailure(
            "VerificationMismatch",
            f"endpoint {worst['name']!r} of the reloaded SavedModel differs from Keras: "
            f"max abs diff {worst['max_abs_diff']:.3g} > tolerance {job.tolerance:g} "
            "(raise `tolerance` on the target if this is expected numerical noise)",
        )
    verification, warnings = conclude(job, f"TensorFlow {tf.__version__}", checks)
    record: dict[str, Any] = {
        "format": job.format,
        "backend": job.backend,
        "endpoints": [ep.to_json() for ep in endpoints],
        "variable_collections": [list(p) for p in job.variable_collections],
        "verification": verification,
    }
    if warnings:
        record["warnings"] = warnings
    return record


def _blame_endpoint(archive: Any, endpoints: list[Endpoint], err: Exception) -> None:
    """Find which endpoint's trace fails, so the error names it.

    Endpoints are traced lazily inside write_out, so a signature that does not
    fit the model surfaces there. Retracing each one costs time, so it is done
    only on this failure path.
    """
    # Keras keeps endpoint functions on its private trackable; read it defensively.
    holder = getattr(archive, "_tf_trackable", archive)
    for ep in endpoints:
        fn = getattr(holder, ep.name, None)
        if fn is None or not hasattr(fn, "get_concrete_function"):
            continue
        try:
            fn.get_concrete_function()
        except Exception as trace_err:
            raise JobFailure(
                "SignatureError",
                f"endpoint {ep.name!r}: the input signature does not fit the model: "
                f"{type(trace_err).__name__}: {first_line(trace_err)}",
            ) from err


def _endpoint_fn(model: Any, ep: Endpoint) -> Callable[..., Any]:
    fn_ref, training = ep.fn, ep.training
    if ":" in fn_ref:
        builder = import_ref(fn_ref, f"endpoint {ep.name!r} fn")
        try:
            fn = builder(model)  # type: ignore[operator]
        except Exception as err:
            raise JobFailure(
                "EndpointError",
                f"endpoint {ep.name!r}: {fn_ref}(model) raised {type(err).__name__}: {err}",
                user_traceback(err),
            ) from err
        if not callable(fn):
            raise JobFailure(
                "EndpointError",
                f"endpoint {ep.name!r}: {fn_ref}(model) must return a callable",
            )
        return fn  # type: ignore[no-any-return]
    if fn_ref in ("call", "__call__"):
        mode = bool(training)
        return lambda *args: model(*args, training=mode)
    method = getattr(model, fn_ref, None)
    if not callable(method):
        raise JobFailure(
            "EndpointError",
            f"endpoint {ep.name!r}: the model has no method {fn_ref!r}",
        )
    if training is None:
        return method  # type: ignore[no-any-return]
    return lambda *args: method(*args, training=training)


def _attribute(model: Any, path: str) -> Any:
    """Resolve 'attr.attr' on the model; a first segment that is not an attribute is a layer."""
    obj = model
    for i, part in enumerate(path.split(".")):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        elif i == 0:
            obj = layer(model, part, f"variable_collections path {path!r}")
        else:
            raise JobFailure(
                "AttributeError", f"variable_collections: {path!r} has no attribute {part!r}"
            )
    return obj
