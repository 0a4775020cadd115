"""Tests for rules.execution.formats.common and verify.check_call: inputs by name, the check."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rules.core.specs import Endpoint, SpecDict, TensorSpec
from rules.execution.failures import JobFailure
from rules.execution.formats.common import feed, named_leaves, require
from rules.execution.verify import check_call, sample


def _tensor(shape: tuple[int | None, ...], name: str | None = None) -> TensorSpec:
    return TensorSpec(shape, "float32", name)


RANKER = Endpoint(
    "serve",
    inputs=(
        SpecDict((("item", _tensor((None, 8), "item")), ("user", _tensor((None, 8), "user")))),
    ),
)
TAGGER = Endpoint("serve", inputs=(_tensor((None, 16)),))


def test_named_leaves_follow_keras_flatten_order() -> None:
    args = [{"user": np.zeros(1), "item": np.ones(1)}]
    leaves = named_leaves(RANKER.inputs, args)
    assert [name for name, _ in leaves] == ["item", "user"]
    assert leaves[0][1][0] == 1.0


def test_feed_by_name_when_the_artifact_kept_the_spec_names() -> None:
    args = [{"user": np.zeros(1), "item": np.ones(1)}]
    fed = feed(["user", "item"], RANKER, args)
    assert fed["item"][0] == 1.0 and fed["user"][0] == 0.0


def test_feed_by_position_when_the_converter_renamed_the_inputs() -> None:
    x = np.arange(3.0)
    assert list(feed(["args_0"], TAGGER, [x])) == ["args_0"]
    with pytest.raises(JobFailure, match=r"the artifact has inputs \['a', 'b'\]"):
        feed(["a", "b"], TAGGER, [x])


def test_check_call_feeds_the_seed_0_sample_and_compares() -> None:
    seen: list[Any] = []

    def artifact(args: list[Any]) -> Any:
        seen.append(args)
        return [args[0] * 2 + 1e-3]

    check = check_call(TAGGER, lambda x: x * 2, artifact, tolerance=1e-2)
    expected = sample(TAGGER.inputs[0], np.random.default_rng(0))
    np.testing.assert_array_equal(seen[0][0], expected)
    assert check["ok"] and check["sample_seed"] == 0
    assert check["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert not check_call(TAGGER, lambda x: x * 2, artifact, tolerance=1e-4)["ok"]


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from rules.core import formats

    fake = formats.ExportFormat(
        name="onnx", backends=("tensorflow",), suffix=".onnx",
        modules=(("tensorflow", ("no_such_module_rules_keras",)),), dists=(), extra="onnx",
        options=frozenset(), runtime="ONNX Runtime",
    )
    monkeypatch.setitem(formats.EXPORT_FORMATS, "onnx", fake)
    with pytest.raises(JobFailure) as info:
        require("onnx", "tensorflow")
    assert info.value.kind == "MissingExtra"
    assert info.value.message.startswith(
        "format 'onnx' needs no_such_module_rules_keras; pip install 'rules-keras[onnx]'"
    )
