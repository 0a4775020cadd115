"""Tests for rules.execution.verify: deterministic samples and the Keras parity check."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rules.core.job import ExportJob
from rules.core.specs import Endpoint, SpecDict
from rules.execution.failures import JobFailure
from rules.execution.verify import (
    DYNAMIC_DIM,
    INT_HIGH,
    SAMPLES,
    WORDS,
    _spread,
    _vacuous,
    conclude,
    sample,
)
from rules.loading.specs import tensor_spec


def _spec(shape: tuple[int | None, ...], dtype: str = "float32") -> Any:
    return tensor_spec(shape, dtype)


def test_dynamic_dims_become_dynamic_dim() -> None:
    out = sample(_spec((None, 3, None)), np.random.default_rng(0))
    assert out.shape == (DYNAMIC_DIM, 3, DYNAMIC_DIM) and out.dtype == np.float32


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bfloat16"])
def test_float_dtypes(dtype: str) -> None:
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")
        import ml_dtypes  # noqa: F401 - registers the bfloat16 dtype name with numpy
    out = sample(_spec((4,), dtype), np.random.default_rng(0))
    assert out.shape == (4,) and str(out.dtype) == dtype


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8"])
def test_int_dtypes_stay_small(dtype: str) -> None:
    out = sample(_spec((50,), dtype), np.random.default_rng(0))
    assert out.dtype == np.dtype(dtype)
    assert out.min() >= 0 and out.max() < INT_HIGH


def test_bool_and_string() -> None:
    rng = np.random.default_rng(0)
    flags = sample(_spec((None, 5), "bool"), rng)
    assert flags.dtype == np.bool_ and flags.shape == (DYNAMIC_DIM, 5)
    text = sample(_spec((None,), "string"), rng)
    assert text.dtype == object and text.shape == (DYNAMIC_DIM,)
    for sentence in text:
        words = sentence.split(" ")
        assert len(words) == 3 and set(words) <= set(WORDS)


def test_scalar_string() -> None:
    out = sample(_spec((), "string"), np.random.default_rng(0))
    assert out.shape == () and len(str(out.item()).split()) == 3


def test_nested_trees_keep_their_structure() -> None:
    x = tensor_spec((None, 2))
    tree = (SpecDict((("a", (x, x)), ("b", x))), x)
    out = sample(tree, np.random.default_rng(0))
    assert isinstance(out, list) and len(out) == 2
    assert list(out[0]) == ["a", "b"]
    assert isinstance(out[0]["a"], list) and out[0]["a"][0].shape == (DYNAMIC_DIM, 2)


def test_samples_are_deterministic_per_seed() -> None:
    tree = (tensor_spec((None, 3)), tensor_spec((2,), "int32"))
    first = sample(tree, np.random.default_rng(7))
    again = sample(tree, np.random.default_rng(7))
    other = sample(tree, np.random.default_rng(8))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


@pytest.mark.e2e
class TestMaxAbsDiff:
    """max_abs_diff flattens with keras.tree, so these import Keras (and its backend)."""

    @pytest.fixture(autouse=True)
    def _keras(self) -> None:
        pytest.importorskip("keras")

    def test_equal_nests_differ_by_zero(self) -> None:
        from rules.execution.verify import max_abs_diff

        value = {"a": np.ones((2, 3)), "b": [np.zeros(2), np.arange(3)]}
        assert max_abs_diff(value, value) == 0.0

    def test_largest_difference_over_all_leaves(self) -> None:
        from rules.execution.verify import max_abs_diff

        expected = [np.zeros(3, "float32"), np.ones(2, "float32")]
        got = [np.array([0.0, 0.25, 0.0], "float32"), np.array([1.0, -1.0], "float32")]
        assert max_abs_diff(expected, got) == pytest.approx(2.0)

    def test_strings_and_bools_compare_exactly(self) -> None:
        from rules.execution.verify import max_abs_diff

        words = np.array(["a", "b"], dtype=object)
        assert max_abs_diff(words, words.copy()) == 0.0
        assert max_abs_diff(words, np.array(["a", "c"], dtype=object)) == float("inf")
        assert max_abs_diff(np.array([True]), np.array([False])) == float("inf")

    def test_structure_and_shape_mismatches_raise(self) -> None:
        from rules.execution.verify import max_abs_diff

        with pytest.raises(ValueError, match="Keras gives 2 tensors, the artifact gives 1"):
            max_abs_diff([np.zeros(1), np.zeros(1)], [np.zeros(1)])
        with pytest.raises(ValueError, match=r"Keras \(2,\), artifact \(3,\)"):
            max_abs_diff(np.zeros(2), np.zeros(3))

    def test_check_endpoints_records_each_endpoint_and_output(self) -> None:
        from rules.execution.verify import check_endpoints

        x = tensor_spec((None, 3))
        endpoints = [Endpoint("serve", inputs=(x,)), Endpoint("off", inputs=(x,))]
        keras_fns = {"serve": lambda a: [a * 2, a * 0], "off": lambda a: a}
        reloaded = {"serve": lambda a: [a * 2, a * 0], "off": lambda a: a + 0.5}
        serve, off = check_endpoints(endpoints, keras_fns, reloaded, 1e-3)
        assert (serve["name"], serve["sample_seed"], serve["samples"]) == ("serve", 0, SAMPLES)
        assert serve["max_abs_diff"] == 0.0 and serve["ok"] and serve["vacuous"]
        doubled, zero = serve["outputs"]
        assert doubled["spread"] > 1.0 and not doubled["vacuous"] and doubled["why"] == ""
        assert zero == {"output": 1, "max_abs_diff": 0.0, "spread": 0.0, "vacuous": True,
                        "why": "is zero for every sample"}
        assert (off["name"], off["sample_seed"]) == ("off", 1)
        assert off["max_abs_diff"] == pytest.approx(0.5) and not off["ok"]
        assert not off["vacuous"]

    def test_every_sample_is_compared_not_only_the_first(self) -> None:
        from rules.execution.verify import check_endpoints

        x = tensor_spec((None, 3))
        calls = {"n": 0}

        def drifts(a: Any) -> Any:
            calls["n"] += 1
            return a + (0.25 if calls["n"] == SAMPLES else 0.0)

        (check,) = check_endpoints([Endpoint("serve", inputs=(x,))], {"serve": lambda a: a},
                                   {"serve": drifts}, 1e-3)
        assert check["max_abs_diff"] == pytest.approx(0.25) and not check["ok"]

    def test_nan_in_the_artifact_is_a_difference(self) -> None:
        from rules.execution.verify import max_abs_diff

        got = np.array([1.0, np.nan, 1.0], "float32")
        assert max_abs_diff(np.ones(3, "float32"), got) > 1.0


def _rows(*calls: list[list[float]]) -> list[np.ndarray]:
    return [np.array(c, dtype="float32") for c in calls]


def test_spread_is_the_largest_range_of_any_element_over_all_sample_rows() -> None:
    values = _rows([[0.0, 1.0], [0.5, 1.0]], [[0.25, 1.0], [0.0, 3.0]])
    assert _spread(values) == pytest.approx(2.0)
    assert _spread(_rows([[1.0, 2.0]], [[1.0, 2.0]])) == 0.0
    # One row in all: nothing to compare it with.
    assert _spread([np.array([[1.0]])]) is None
    # Scalars per call are stacked; shapes that differ cannot be compared.
    assert _spread([np.array(1.0), np.array(3.0)]) == 2.0
    assert _spread([np.zeros((1, 2)), np.zeros((1, 3))]) is None
    strings = [np.array(["a", "a"], dtype=object), np.array(["a", "b"], dtype=object)]
    assert _spread(strings) == 1.0


@pytest.mark.parametrize(("values", "why"), [
    (_rows([[0.0, 0.0]], [[0.0, 0.0]]), "is zero for every sample"),
    (_rows([[0.3, 0.7]], [[0.3, 0.7]]), "is the same for every sample"),
    (_rows([[0.3, np.nan]], [[0.1, 0.2]]), "contains NaN, which the comparison cannot check"),
    (_rows([[0.3, 0.7]], [[0.4, 0.7]]), ""),
])
def test_vacuous_outputs(values: list[np.ndarray], why: str) -> None:
    assert _vacuous(values, _spread(values)) == why


def _checks(vacuous: bool) -> list[dict[str, Any]]:
    out = {"output": 0, "max_abs_diff": 0.0, "spread": 0.0 if vacuous else 1.0,
           "vacuous": vacuous, "why": "is the same for every sample" if vacuous else ""}
    return [{"name": "serve", "outputs": [out], "vacuous": vacuous}]


def test_a_vacuous_check_warns_naming_the_label_and_the_fix() -> None:
    job = ExportJob("//m:e", "tensorflow", "m.model:build", "tf_saved_model")
    record, warnings = conclude(job, "TensorFlow", _checks(True))
    assert record["vacuous"] is True and record["passed"] is True
    (warning,) = warnings
    assert warning.startswith("//m:e: the parity check proves little: endpoint 'serve' "
                              "output 0 is the same for every sample; give the target "
                              "sample_inputs")
    assert conclude(job, "TensorFlow", _checks(False)) == (
        {"runtime": "TensorFlow", "tolerance": 1e-5, "checks": _checks(False), "passed": True,
         "vacuous": False}, [])


def test_strict_verification_makes_a_vacuous_check_fail() -> None:
    job = ExportJob("//m:e", "tensorflow", "m.model:build", "tf_saved_model",
                    strict_verification=True)
    with pytest.raises(JobFailure, match=r"proves little.*strict_verification=False") as info:
        conclude(job, "TensorFlow", _checks(True))
    assert info.value.kind == "VacuousVerification"
    assert conclude(job, "TensorFlow", _checks(False))[1] == []
