"""Tests for rules.execution.verify: deterministic samples and the Keras parity check."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rules.core.specs import Endpoint, SpecDict
from rules.execution.verify import DYNAMIC_DIM, INT_HIGH, WORDS, sample
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

    def test_check_endpoints_records_each_endpoint(self) -> None:
        from rules.execution.verify import check_endpoints

        x = tensor_spec((None, 3))
        endpoints = [Endpoint("serve", inputs=(x,)), Endpoint("off", inputs=(x,))]
        keras_fns = {"serve": lambda a: a * 2, "off": lambda a: a}
        reloaded = {"serve": lambda a: a * 2, "off": lambda a: a + 0.5}
        records = check_endpoints(endpoints, keras_fns, reloaded, 1e-3)
        assert records == [
            {"name": "serve", "sample_seed": 0, "max_abs_diff": 0.0, "ok": True},
            {"name": "off", "sample_seed": 1, "max_abs_diff": pytest.approx(0.5), "ok": False},
        ]

    def test_nan_in_the_artifact_is_a_difference(self) -> None:
        from rules.execution.verify import max_abs_diff

        got = np.array([1.0, np.nan, 1.0], "float32")
        assert max_abs_diff(np.ones(3, "float32"), got) > 1.0
