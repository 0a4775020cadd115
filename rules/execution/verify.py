"""The parity check between a reloaded artifact and Keras, and whether it proved anything.

Every endpoint is called on several samples on both sides. A check whose
Keras outputs are the same for every sample, all zero, or NaN passes whatever
the artifact computes: it is recorded as vacuous, warned about, and with
strict_verification fails the target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rules.core.job import ExportJob
from rules.core.specs import Endpoint
from rules.execution.failures import JobFailure
from rules.execution.samples import (
    DYNAMIC_DIM,
    INT_HIGH,
    SAMPLES,
    WORDS,
    Sampled,
    generated,
    sample,
)

__all__ = [
    "DYNAMIC_DIM", "INT_HIGH", "SAMPLES", "WORDS", "check_call", "check_endpoints",
    "conclude", "max_abs_diff", "sample",
]

FIX = (
    "give the target sample_inputs that exercise the model (a 'module:function' or a "
    ".npz file; see README, keras_export)"
)


def max_abs_diff(expected: Any, got: Any) -> float:
    """Largest absolute difference between two nests of arrays; structure must match."""
    return max(leaf_diffs(expected, got), default=0.0)


def leaf_diffs(expected: Any, got: Any) -> list[float]:
    """The largest absolute difference of each output, in Keras's flattening order."""
    from keras import tree

    a_leaves = tree.flatten(expected)
    b_leaves = tree.flatten(got)
    if len(a_leaves) != len(b_leaves):
        raise ValueError(
            f"output structure differs: Keras gives {len(a_leaves)} tensors, "
            f"the artifact gives {len(b_leaves)}"
        )
    return [_diff(_numpy(a), _numpy(b)) for a, b in zip(a_leaves, b_leaves, strict=True)]


def _diff(x: np.ndarray, y: np.ndarray) -> float:
    if x.shape != y.shape:
        raise ValueError(f"output shape differs: Keras {x.shape}, artifact {y.shape}")
    if x.dtype.kind in "OSUb" or y.dtype.kind in "OSUb":
        return 0.0 if np.array_equal(x, y) else float("inf")
    if not x.size:
        return 0.0
    a, b = x.astype("float64"), y.astype("float64")
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")  # NaN on one side only: max() would hide it
    diff = np.abs(a - b)
    return float(np.max(np.where(np.isnan(diff), 0.0, diff)))


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def check_endpoints(
    endpoints: Sequence[Endpoint],
    keras_fns: Mapping[str, Callable[..., Any]],
    reloaded: Mapping[str, Callable[..., Any]],
    tolerance: float,
    samples: Mapping[str, Sampled] | None = None,
) -> list[dict[str, Any]]:
    """Call every endpoint on both sides with the same samples; return one record each.

    Calls go in endpoint order, each sample on Keras and then on the artifact,
    so stateful endpoints (e.g. a training=True BatchNormalization update)
    mutate both models identically.
    """
    records = []
    for index, ep in enumerate(endpoints):
        sampled = (samples or {}).get(ep.name) or generated(ep, index)
        keras_fn, artifact_fn = keras_fns[ep.name], reloaded[ep.name]
        records.append(_check(
            ep, sampled,
            lambda args, fn=keras_fn: fn(*args),  # type: ignore[misc]
            lambda args, fn=artifact_fn: fn(*args),  # type: ignore[misc]
            tolerance,
        ))
    return records


def check_call(
    ep: Endpoint,
    keras_fn: Callable[..., Any],
    artifact_fn: Callable[[list[Any]], Any],
    tolerance: float,
    sampled: Sampled | None = None,
) -> dict[str, Any]:
    """The check for artifacts that hold the model's call only (ONNX, LiteRT, OpenVINO).

    Without `sampled` it feeds the samples check_endpoints gives the first
    endpoint (seed 0), so a target exported in several formats is checked on
    the same inputs in each. `artifact_fn` takes the positional arguments as a list.
    """
    return _check(ep, sampled or generated(ep, 0), lambda args: keras_fn(*args), artifact_fn,
                  tolerance)


def _check(
    ep: Endpoint,
    sampled: Sampled,
    keras_call: Callable[[list[Any]], Any],
    artifact_call: Callable[[list[Any]], Any],
    tolerance: float,
) -> dict[str, Any]:
    from keras import tree

    diffs: list[float] = []
    outputs: list[list[np.ndarray]] = []
    for args in sampled.calls:
        expected = keras_call(args)
        found = leaf_diffs(expected, artifact_call(args))
        diffs = found if not diffs else [max(a, b) for a, b in zip(diffs, found, strict=True)]
        outputs.append([_numpy(leaf) for leaf in tree.flatten(expected)])
    records = []
    for index, diff in enumerate(diffs):
        values = [call[index] for call in outputs]
        spread = _spread(values)
        why = _vacuous(values, spread)
        records.append({"output": index, "max_abs_diff": diff, "spread": spread,
                        "vacuous": bool(why), "why": why})
    worst = max(diffs, default=0.0)
    return {
        "name": ep.name,
        "samples": len(sampled.calls),
        "source": sampled.source,
        "sample_seed": sampled.seed,
        "max_abs_diff": worst,
        "ok": worst <= tolerance,
        "vacuous": any(r["vacuous"] for r in records),
        "outputs": records,
    }


def _spread(values: Sequence[np.ndarray]) -> float | None:
    """How much one output varies across samples: the largest max - min of any element over
    every sample row (the calls' rows concatenated); None where it cannot be measured."""
    if all(v.ndim >= 1 for v in values) and len({v.shape[1:] for v in values}) == 1:
        rows = np.concatenate(values)
    elif len({v.shape for v in values}) == 1:
        rows = np.stack(values)
    else:
        return None
    if len(rows) < 2 or rows.size == 0:
        return None
    flat = rows.reshape(len(rows), -1)
    if flat.dtype.kind in "OSU":
        return 0.0 if all(np.array_equal(flat[0], row) for row in flat[1:]) else 1.0
    x = flat.astype("float64")
    if np.isnan(x).all(axis=0).any():
        return None
    return float(np.max(np.nanmax(x, axis=0) - np.nanmin(x, axis=0)))


def _vacuous(values: Sequence[np.ndarray], spread: float | None) -> str:
    """Why comparing this output proves little, or ''."""
    numeric = [v for v in values if v.dtype.kind in "fcbiu" and v.size]
    if numeric and any(np.isnan(v.astype("float64")).any() for v in numeric):
        return "contains NaN, which the comparison cannot check"
    if numeric and len(numeric) == len(values) and not any(np.any(v) for v in numeric):
        return "is zero for every sample"
    if spread == 0.0:
        return "is the same for every sample"
    return ""


def vacuity(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    """One phrase per vacuous output: "endpoint 'serve' output 0 is zero for every sample"."""
    return [
        f"endpoint {check['name']!r} output {out['output']} {out['why']}"
        for check in checks
        for out in check["outputs"]
        if out["vacuous"]
    ]


def conclude(
    job: ExportJob, runtime: str, checks: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """The manifest's verification record and the build's warnings for checks that passed.

    A vacuous check fails the job under strict_verification, else it is a
    warning naming the label and the fix.
    """
    problems = vacuity(checks)
    if problems and job.strict_verification:
        raise JobFailure(
            "VacuousVerification",
            f"the parity check proves little: {'; '.join(problems)}; {FIX}, or set "
            "strict_verification=False on the target",
        )
    warnings = [
        f"{job.label}: the parity check proves little: {'; '.join(problems)}; {FIX}"
    ] if problems else []
    record = {
        "runtime": runtime,
        "tolerance": job.tolerance,
        "checks": checks,
        "passed": True,
        "vacuous": bool(problems),
    }
    return record, warnings
