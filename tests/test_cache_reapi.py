"""Tests for the REAPI ActionResult codec and the ActionResult record built on it."""

from __future__ import annotations

import random
from types import MappingProxyType

import pytest

from rules.cache.reapi import (
    ActionResultMessage,
    DecodeError,
    Digest,
    OutputFile,
    decode_action_result,
    encode_action_result,
)
from rules.cache.records import ActionResult
from rules.core.files import FileEntry, InvalidEntry

HASH_A = "ab" * 32
HASH_B = "0123456789abcdef" * 4


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field, spelled out independently of the encoder under test."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


# protoc's encoding of
#   ActionResult{output_files: [{path: "a.txt", digest: {hash: HASH_A, size_bytes: 3},
#                                is_executable: true}],
#                stdout_raw: '{"x":1}',
#                execution_metadata: {worker: "worker"}}
# written out field by field, independently of the encoder under test.
REAL_LOOKING = (
    _ld(2, _ld(1, b"a.txt") + _ld(2, _ld(1, HASH_A.encode()) + b"\x10\x03") + b"\x20\x01")
    + _ld(5, b'{"x":1}')
    + _ld(9, _ld(1, b"worker"))
)


def test_decodes_bytes_as_protoc_writes_them() -> None:
    message = decode_action_result(REAL_LOOKING)
    assert message == ActionResultMessage(
        output_files=(OutputFile("a.txt", Digest(HASH_A, 3), is_executable=True),),
        exit_code=0,
        stdout_raw=b'{"x":1}',
    )


def test_encoding_is_byte_identical_to_protoc_field_order() -> None:
    message = ActionResultMessage((OutputFile("a.txt", Digest(HASH_A, 3), True),), 0, b'{"x":1}')
    # REAL_LOOKING minus the server-added execution_metadata.
    assert encode_action_result(message) == REAL_LOOKING[: -len(_ld(9, _ld(1, b"worker")))]


def test_round_trip_keeps_every_field() -> None:
    message = ActionResultMessage(
        output_files=(
            OutputFile("variables/variables.data-00000-of-00001", Digest(HASH_A, 5 << 33)),
            OutputFile("bin/run é", Digest(HASH_B, 0), is_executable=True),
            OutputFile("empty", Digest(HASH_B, 1)),
        ),
        exit_code=0,
        stdout_raw=b"\x00\xff" * 200,
    )
    assert decode_action_result(encode_action_result(message)) == message


def test_negative_exit_code_is_sign_extended() -> None:
    data = encode_action_result(ActionResultMessage(exit_code=-1))
    assert data == b"\x20" + b"\xff" * 9 + b"\x01"
    assert decode_action_result(data).exit_code == -1


@pytest.mark.parametrize(
    "unknown",
    [
        b"\x58\x96\x01",  # field 11, varint
        b"\x59" + bytes(8),  # field 11, fixed64
        b"\x5d" + bytes(4),  # field 11, fixed32
        _ld(11, b"anything at all"),  # field 11, length-delimited
        b"\xf8\xff\xff\xff\x0f\x00",  # the largest field number, varint
    ],
)
def test_unknown_fields_of_every_wire_type_are_skipped(unknown: bytes) -> None:
    digest = _ld(1, HASH_A.encode()) + unknown + b"\x10\x03"
    output = unknown + _ld(1, b"a.txt") + _ld(2, digest) + unknown
    data = unknown + _ld(2, output) + unknown
    message = decode_action_result(data)
    assert message.output_files == (OutputFile("a.txt", Digest(HASH_A, 3)),)


def test_repeated_digest_field_merges_like_protobuf() -> None:
    output = _ld(1, b"a") + _ld(2, _ld(1, HASH_A.encode())) + _ld(2, b"\x10\x07")
    assert decode_action_result(_ld(2, output)).output_files[0].digest == Digest(HASH_A, 7)


def test_every_truncation_raises_decode_error_or_decodes() -> None:
    full = encode_action_result(
        ActionResultMessage((OutputFile("a.txt", Digest(HASH_A, 300), True),), -3, b"meta" * 40)
    )
    rejected = 0
    for cut in range(len(full)):
        try:
            decode_action_result(full[:cut])
        except DecodeError:
            rejected += 1
    # Only the cuts on the three top-level field boundaries (before the output
    # file, the exit code and stdout) are themselves valid messages.
    assert rejected == len(full) - 3


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\x12\x05ab", "claims 5 bytes"),
        (b"\x20\xff\xff", "truncated varint"),
        (b"\x20" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x20" + b"\xff" * 9 + b"\x02", "overflows 64 bits"),
        (b"\x00\x01", "invalid field number 0"),
        (b"\x0e", "unexpected wire type 6"),
        (b"\x5c", "unexpected wire type 4"),
        # proto3 has no groups: a start-group is refused, even for an unknown field.
        (b"\x5b\x08\x01\x5c", "unexpected wire type 3"),
        (b"\x5b" * 40, "unexpected wire type 3"),
        (b"\x59\x01\x02", "truncated"),
        (b"\x22\x01\x00", "expected a varint"),
        (b"\x28\x01", "expected a length-delimited"),
        (_ld(2, _ld(2, _ld(1, HASH_A.encode()))), "has no path"),
        (_ld(2, _ld(1, b"a")), "has no digest"),
        (_ld(2, _ld(1, b"\xff\xfe") + _ld(2, b"")), "not valid UTF-8"),
        (b"\x20\x80\x80\x80\x80\x10", "does not fit in int32"),
    ],
)
def test_malformed_input_names_the_problem(data: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        decode_action_result(data)


def test_random_garbage_never_escapes_as_another_exception() -> None:
    rng = random.Random(20240601)
    valid = encode_action_result(
        ActionResultMessage((OutputFile("x/y", Digest(HASH_B, 12), False),), 0, b"{}")
    )
    for _ in range(3000):
        if rng.random() < 0.5:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        else:
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        try:
            decode_action_result(data)
        except DecodeError as error:
            assert str(error)


def _result(**overrides: object) -> ActionResult:
    fields: dict[str, object] = {
        "files": (
            FileEntry("saved_model.pb", HASH_A, 10, 0o644),
            FileEntry("tool/run.sh", HASH_B, 3, 0o750),
        ),
        "metadata": {"endpoints": ["serve"], "verified": True, "key_inputs": {"a": 1.5}},
        "dirs": ("assets", "variables/empty"),
    }
    fields.update(overrides)
    return ActionResult(**fields)  # type: ignore[arg-type]


def test_action_result_round_trips_through_reapi() -> None:
    result = _result()
    again = ActionResult.from_reapi(result.to_reapi())
    assert again == result
    assert isinstance(again.metadata, MappingProxyType)


def test_action_result_keeps_only_the_executable_bit_in_the_proto() -> None:
    message = decode_action_result(_result().to_reapi())
    assert [(o.path, o.is_executable) for o in message.output_files] == [
        ("saved_model.pb", False),
        ("tool/run.sh", True),
    ]


def test_single_file_artifact_round_trips() -> None:
    result = ActionResult((FileEntry("model.keras", HASH_A, 9, 0o600),), {}, kind="file")
    assert ActionResult.from_reapi(result.to_reapi()) == result


def test_foreign_entry_without_our_record_is_refused() -> None:
    """Another client's entry cannot say which action it answers, so it is never a hit."""
    data = encode_action_result(
        ActionResultMessage(
            (OutputFile("a", Digest(HASH_A, 1), True), OutputFile("b", Digest(HASH_B, 1)))
        )
    )
    with pytest.raises(InvalidEntry, match="no rules_keras record"):
        ActionResult.from_reapi(data)


def test_an_empty_entry_is_refused_not_taken_for_an_empty_folder() -> None:
    with pytest.raises(InvalidEntry, match="no rules_keras record"):
        ActionResult.from_reapi(b"")


def test_the_record_carries_the_key_and_label() -> None:
    result = _result(key="c" * 64, label="//m:e")
    again = ActionResult.from_reapi(result.to_reapi())
    assert (again.key, again.label) == ("c" * 64, "//m:e")


def _tampered(edit: str) -> bytes:
    """A valid entry whose REAPI outputs were changed behind its record's back."""
    message = decode_action_result(_result(key="c" * 64).to_reapi())
    outputs = list(message.output_files)
    if edit == "swap":
        outputs[0] = OutputFile(outputs[0].path, Digest(HASH_B, 3))
    elif edit == "rename":
        outputs[0] = OutputFile("renamed.pb", outputs[0].digest)
    elif edit == "drop":
        outputs.pop()
    elif edit == "add":
        outputs.append(OutputFile("evil.txt", Digest(HASH_A, 10)))
    return encode_action_result(ActionResultMessage(tuple(outputs), 0, message.stdout_raw))


@pytest.mark.parametrize(
    ("edit", "needle"),
    [("swap", "has digest"), ("rename", "not in its record"), ("drop", "which its outputs lack"),
     ("add", "not in its record")],
)
def test_outputs_must_be_exactly_what_the_record_lists(edit: str, needle: str) -> None:
    with pytest.raises(InvalidEntry, match=needle):
        ActionResult.from_reapi(_tampered(edit))


def test_reserved_metadata_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="reserved for the cache"):
        _result(metadata={"_modes": {}})


def test_non_json_metadata_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="must be JSON data"):
        _result(metadata={"when": object()}).to_reapi()


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../escape", "a/../../b", "a\\b", "a//b", "./a", "a/.", "C:x"]
)
def test_unsafe_paths_are_rejected(path: str) -> None:
    with pytest.raises(InvalidEntry, match="unsafe path"):
        FileEntry(path, HASH_A, 1, 0o644)
    data = encode_action_result(ActionResultMessage((OutputFile(path, Digest(HASH_A, 1)),)))
    with pytest.raises(InvalidEntry):
        ActionResult.from_reapi(data)


@pytest.mark.parametrize(
    ("files", "dirs", "needle"),
    [
        ((("a", HASH_A), ("a", HASH_B)), (), "same file twice"),
        ((("a", HASH_A), ("a/b", HASH_B)), (), "as a directory"),
        ((("a", HASH_A),), ("a/sub",), "as a directory"),
        ((("a", HASH_A),), ("a",), "both as a file and as a directory"),
        ((("a", HASH_A),), ("../up",), "unsafe path"),
    ],
)
def test_inconsistent_layouts_are_rejected(
    files: tuple[tuple[str, str], ...], dirs: tuple[str, ...], needle: str
) -> None:
    entries = tuple(FileEntry(p, h, 1, 0o644) for p, h in files)
    with pytest.raises(InvalidEntry, match=needle):
        ActionResult(entries, {}, dirs)


@pytest.mark.parametrize(
    "stdout",
    [b"not json", b"[1, 2]", b'{"_modes": []}', b'{"_dirs": "a"}', b'{"_kind": "socket"}', b"\xff",
     b'{"_record": 2, "_key": "", "_label": "", "_dirs": [], "_kind": "file", "_files": []}',
     b'{"_record": 2, "_key": "", "_label": "", "_dirs": [], "_kind": "file"}',
     b'{"_record": 1}'],
)
def test_bad_metadata_payloads_are_invalid_entries(stdout: bytes) -> None:
    data = encode_action_result(
        ActionResultMessage((OutputFile("a", Digest(HASH_A, 1)),), stdout_raw=stdout)
    )
    with pytest.raises(InvalidEntry):
        ActionResult.from_reapi(data)


def test_failed_action_is_not_a_usable_entry() -> None:
    data = encode_action_result(ActionResultMessage(exit_code=1))
    with pytest.raises(InvalidEntry, match="exit_code=1"):
        ActionResult.from_reapi(data)
