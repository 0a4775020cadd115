"""Tests for the one check every cache tier applies: does an entry answer the question asked?"""

from __future__ import annotations

import pytest

from rules.cache.records import ActionResult
from rules.cache.validate import Question, Rejected, accept, problem
from rules.core.files import FileEntry
from rules.core.formats import Expected, expected
from rules.core.job import ExportJob, TrainJob

KEY = "1" * 64
OTHER = "2" * 64
HASH = "ab" * 32
SAVED_MODEL = Question(KEY, "//m:e", Expected("directory", ("saved_model.pb",)))
WEIGHTS = Question(KEY, "//m:w", Expected("file"))


def _saved_model(key: str = KEY, label: str = "//m:e", pb_size: int = 10) -> ActionResult:
    files = (FileEntry("saved_model.pb", HASH, pb_size, 0o644),
             FileEntry("variables/variables.index", HASH, 3, 0o644))
    return ActionResult(files, {}, ("assets",), "directory", key, label)


def test_the_right_entry_is_accepted() -> None:
    entry = _saved_model()
    assert problem(entry, SAVED_MODEL) is None
    assert accept(entry.to_reapi(), SAVED_MODEL) == entry


def test_another_keys_entry_is_refused_and_named() -> None:
    with pytest.raises(Rejected, match=r"names action 222222222222 \(built for //m:x\), not 1111"):
        accept(_saved_model(OTHER, "//m:x").to_reapi(), SAVED_MODEL)


def test_an_entry_that_names_no_action_is_refused() -> None:
    anonymous = _saved_model(key="", label="")
    assert problem(anonymous, SAVED_MODEL) == "it names no action, not 111111111111"


def test_a_renamed_target_shares_the_entry_of_its_key() -> None:
    """The label is outside the key by design: the same action under a new name is a hit."""
    assert problem(_saved_model(label="//m:old_name"), SAVED_MODEL) is None


@pytest.mark.parametrize("data", [b"", b"\x00", b"garbage"])
def test_empty_and_garbage_bodies_are_refused(data: bytes) -> None:
    with pytest.raises(Rejected):
        accept(data, SAVED_MODEL)


def test_an_empty_folder_is_not_a_saved_model() -> None:
    empty = ActionResult((), {}, (), "directory", KEY, "//m:e")
    with pytest.raises(Rejected, match="holds no files"):
        accept(empty.to_reapi(), SAVED_MODEL)


def test_a_saved_model_needs_a_non_empty_saved_model_pb() -> None:
    no_pb = ActionResult((FileEntry("variables/x", HASH, 3, 0o644),), {}, (), "directory", KEY)
    assert problem(no_pb, SAVED_MODEL) == "it has no saved_model.pb"
    assert problem(_saved_model(pb_size=0), SAVED_MODEL) == "its saved_model.pb is empty"


def test_a_weights_file_is_exactly_one_file() -> None:
    one = ActionResult((FileEntry("w.weights.h5", HASH, 9, 0o644),), {}, (), "file", KEY)
    assert problem(one, WEIGHTS) is None
    assert problem(_saved_model(), WEIGHTS) == "it holds a directory, but this target makes a file"


def test_expected_shapes_come_from_the_format_table() -> None:
    def export(fmt: str) -> Expected:
        return expected(ExportJob(label="//m:e", backend="tensorflow", factory="m:f", format=fmt))

    assert export("tf_saved_model") == Expected("directory", ("saved_model.pb",))
    assert export("openvino") == Expected("directory", ("model.xml", "model.bin"))
    assert export("onnx") == Expected("file")
    assert export("litert") == Expected("file")
    train = TrainJob(label="//m:w", backend="tensorflow", factory="m:f", train="m:t")
    assert expected(train) == Expected("file")
