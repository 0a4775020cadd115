"""Tests for rules.execution.samples: generated samples, vocabularies, and sample_inputs."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rules.core.job import ExportJob
from rules.core.specs import Endpoint, SpecDict, TensorSpec
from rules.execution.failures import JobFailure
from rules.execution.samples import (
    PHRASE,
    SAMPLES,
    Vocabulary,
    for_job,
    generated,
    sample,
)

X = TensorSpec((None, 3), "float32", "x")
TOKENS = TensorSpec((None, 2), "string", "tokens")
IDS = TensorSpec((None, 2), "int64", "ids")
SERVE = Endpoint("serve", "call", (X,), None)
RANKER = Endpoint(
    "serve", "call",
    (SpecDict((("item", TensorSpec((None, 2), "float32", None)),
               ("user", TensorSpec((None, 2), "float32", None)))),), None,
)
JOB = ExportJob("//m:e", "tensorflow", "m.model:build", "tf_saved_model")


class NoLayers:
    """Stands for a model without lookup layers, so no Keras import is needed."""

    layers: list[Any] = []


def test_generated_calls_start_with_the_seeded_sample_and_differ() -> None:
    sampled = generated(SERVE, 3)
    assert len(sampled.calls) == SAMPLES and sampled.seed == 3
    np.testing.assert_array_equal(sampled.calls[0][0], sample(X, np.random.default_rng(3)))
    assert not np.array_equal(sampled.calls[0][0], sampled.calls[1][0])
    again = generated(SERVE, 3)
    for a, b in zip(sampled.calls, again.calls, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    assert sampled.source == "generated"


def test_strings_come_from_the_vocabulary_as_tokens_or_phrases() -> None:
    rng = np.random.default_rng(0)
    tokens = sample(TOKENS, rng, Vocabulary(strings=("cat", "dog"), layers=("lookup",)))
    assert tokens.shape == (2, 2) and set(tokens.ravel()) <= {"cat", "dog"}
    phrases = sample(TOKENS, rng, Vocabulary(strings=("cat", "dog"), phrases=True))
    for phrase in phrases.ravel():
        assert len(phrase.split(" ")) == PHRASE and set(phrase.split(" ")) <= {"cat", "dog"}


def test_integers_come_from_the_vocabulary_only_of_the_input_that_feeds_it() -> None:
    vocab = Vocabulary(ints={"ids": (100, 200)}, layers=("ilookup",))
    tree = (IDS, TensorSpec((None, 2), "int64", "other"))
    ids, other = sample(tree, np.random.default_rng(0), vocab)
    assert set(ids.ravel()) <= {100, 200} and ids.dtype == np.int64
    assert other.max() < 4
    # A dict key names its leaf when the spec has no name of its own.
    keyed = SpecDict((("ids", TensorSpec((None, 2), "int64", None)),))
    assert set(sample(keyed, np.random.default_rng(0), vocab)["ids"].ravel()) <= {100, 200}
    assert "drawn from the vocabulary of 'ilookup'" in vocab.describe()


def _job(**fields: Any) -> ExportJob:
    return dataclasses.replace(JOB, **fields)


@pytest.fixture
def in_tmp(tmp_path: Path) -> Path:
    """Workers run in the workspace root: relative sample files are read from there."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path  # type: ignore[misc]
    os.chdir(cwd)


def test_a_npz_file_gives_one_call_per_row(in_tmp: Path) -> None:
    x = np.arange(4 * 2 * 3, dtype="float64").reshape(4, 2, 3)
    np.savez(in_tmp / "s.npz", serve=x)
    sampled = for_job(_job(sample_inputs_file="s.npz"), NoLayers(), [SERVE])["serve"]
    assert len(sampled.calls) == 4 and sampled.source == "sample_inputs s.npz"
    assert sampled.calls[1][0].dtype == np.float32
    np.testing.assert_array_equal(sampled.calls[1][0], x[1])


def test_a_npz_file_names_nested_inputs_by_path(in_tmp: Path) -> None:
    np.savez(in_tmp / "s.npz", **{"serve/0/user": np.ones((3, 2, 2)),
                                  "serve/0/item": np.zeros((3, 2, 2))})
    sampled = for_job(_job(sample_inputs_file="s.npz"), NoLayers(), [RANKER])["serve"]
    assert len(sampled.calls) == 3
    assert set(sampled.calls[0][0]) == {"user", "item"}
    assert sampled.calls[0][0]["user"].sum() == 4


@pytest.mark.parametrize(("arrays", "message"), [
    ({"serve/0/usr": np.ones((3, 2, 2))}, "no endpoint input is called 'serve/0/usr'.*"
     "Did you mean 'serve/0/user'"),
    ({"serve/0/user": np.ones((3, 2, 2))}, r"missing arrays \['serve/0/item'\]"),
    ({"serve/0/user": np.ones((3, 2, 2)), "serve/0/item": np.ones((2, 2, 2))},
     "must share a first axis"),
])
def test_a_npz_file_that_does_not_fit_names_what_is_expected(
    in_tmp: Path, arrays: dict[str, Any], message: str
) -> None:
    np.savez(in_tmp / "s.npz", **arrays)
    with pytest.raises(JobFailure, match=message) as info:
        for_job(_job(sample_inputs_file="s.npz"), NoLayers(), [RANKER])
    assert info.value.kind == "SampleInputsError"


def make_samples() -> dict[str, Any]:
    return {"serve": [[np.ones((1, 3))], [[[0.0, 1.0, 2.0]]]]}


def wrong_name() -> dict[str, Any]:
    return {"serv": [[np.ones((1, 3))]]}


def wrong_arity() -> dict[str, Any]:
    return {"serve": [np.ones((1, 3))]}


def not_a_dict() -> list[Any]:
    return []


def test_a_function_gives_the_calls_and_other_endpoints_are_generated() -> None:
    other = Endpoint("other", "call", (X,), None)
    samples = for_job(_job(sample_inputs=f"{__name__}:make_samples"), NoLayers(), [SERVE, other])
    assert len(samples["serve"].calls) == 2
    assert samples["serve"].calls[1][0].dtype == np.float32
    assert samples["serve"].source == f"sample_inputs {__name__}:make_samples"
    assert samples["other"].source == "generated" and samples["other"].seed == 1


@pytest.mark.parametrize(("fn", "message"), [
    ("wrong_name", "the target has no endpoint 'serv'; its endpoints are \\['serve'\\]. "
     "Did you mean 'serve'"),
    ("wrong_arity", "call 0 of endpoint 'serve' must be a list of 1 positional input"),
    ("not_a_dict", "must return a dict of endpoint name -> list of calls"),
    ("missing", "has no attribute 'missing'"),
])
def test_a_function_that_does_not_fit_is_a_named_failure(fn: str, message: str) -> None:
    with pytest.raises(JobFailure, match=message):
        for_job(_job(sample_inputs=f"{__name__}:{fn}"), NoLayers(), [SERVE])


@pytest.mark.e2e
def test_a_token_lookup_model_gets_in_vocabulary_samples() -> None:
    """The default samples of a StringLookup model are not all out of vocabulary."""
    keras = pytest.importorskip("keras")
    inputs = keras.Input((3,), dtype="string", name="tokens")
    lookup = keras.layers.StringLookup(vocabulary=["cat", "dog", "fish"], name="lookup")
    model = keras.Model(inputs, keras.layers.Embedding(4, 2)(lookup(inputs)))
    ep = Endpoint("serve", "call", (TensorSpec((None, 3), "string", "tokens"),), None)
    sampled = for_job(JOB, model, [ep])["serve"]
    assert "'lookup'" in sampled.source
    for (tokens,) in sampled.calls:
        indices = np.asarray(lookup(tokens))
        assert (indices > 0).all(), indices  # index 0 is the OOV bucket
