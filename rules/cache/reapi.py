"""Hand-rolled protobuf codec for the few REAPI v2 `ActionResult` fields the cache uses."""

from __future__ import annotations

from dataclasses import dataclass

# Field numbers from build/bazel/remote/execution/v2/remote_execution.proto. Only
# these are written; everything else a server adds (bazel-remote stamps
# `execution_metadata = 9` on some uploads) is skipped on read.
_AR_OUTPUT_FILES = 2
_AR_EXIT_CODE = 4
_AR_STDOUT_RAW = 5
_OF_PATH = 1
_OF_DIGEST = 2
_OF_IS_EXECUTABLE = 4
_DG_HASH = 1
_DG_SIZE_BYTES = 2

_VARINT = 0
_I64 = 1
_LEN = 2
_I32 = 5

_MAX_VARINT_BYTES = 10
_MAX_FIELD_NUMBER = (1 << 29) - 1


class DecodeError(ValueError):
    """The bytes are not a well-formed protobuf message of the expected shape."""


@dataclass(frozen=True)
class Digest:
    """REAPI `Digest`: lowercase sha256 hex and the blob's size in bytes."""

    hash: str
    size_bytes: int


@dataclass(frozen=True)
class OutputFile:
    """REAPI `OutputFile`: a path relative to the output root and its blob."""

    path: str
    digest: Digest
    is_executable: bool = False


@dataclass(frozen=True)
class ActionResultMessage:
    """The subset of REAPI `ActionResult` the cache reads and writes."""

    output_files: tuple[OutputFile, ...] = ()
    exit_code: int = 0
    stdout_raw: bytes = b""


def encode_action_result(message: ActionResultMessage) -> bytes:
    """Serialise `message` in field order, omitting proto3 defaults like protoc does."""
    out = bytearray()
    for output in message.output_files:
        _put_bytes(out, _AR_OUTPUT_FILES, _encode_output_file(output))
    if message.exit_code:
        if not -(1 << 31) <= message.exit_code < (1 << 31):
            raise ValueError(f"exit_code must fit in int32. Received: {message.exit_code}")
        _put_varint_field(out, _AR_EXIT_CODE, message.exit_code)
    if message.stdout_raw:
        _put_bytes(out, _AR_STDOUT_RAW, message.stdout_raw)
    return bytes(out)


def decode_action_result(data: bytes) -> ActionResultMessage:
    """Parse an `ActionResult`; unknown fields are skipped, malformed input raises DecodeError."""
    outputs: list[OutputFile] = []
    exit_code = 0
    stdout_raw = b""
    for number, wire, value in _fields(data, "ActionResult"):
        if number == _AR_OUTPUT_FILES:
            outputs.append(_decode_output_file(_expect_bytes(value, wire, "output_files")))
        elif number == _AR_EXIT_CODE:
            exit_code = _to_signed(_expect_int(value, wire, "exit_code"), 32)
        elif number == _AR_STDOUT_RAW:
            stdout_raw = _expect_bytes(value, wire, "stdout_raw")
    return ActionResultMessage(tuple(outputs), exit_code, stdout_raw)


def _encode_output_file(output: OutputFile) -> bytes:
    out = bytearray()
    _put_bytes(out, _OF_PATH, output.path.encode("utf-8"))
    digest = bytearray()
    _put_bytes(digest, _DG_HASH, output.digest.hash.encode("ascii"))
    if output.digest.size_bytes:
        if not 0 <= output.digest.size_bytes < (1 << 63):
            raise ValueError(f"size_bytes must fit in int64. Received: {output.digest.size_bytes}")
        _put_varint_field(digest, _DG_SIZE_BYTES, output.digest.size_bytes)
    _put_bytes(out, _OF_DIGEST, bytes(digest))
    if output.is_executable:
        _put_varint_field(out, _OF_IS_EXECUTABLE, 1)
    return bytes(out)


def _decode_output_file(data: bytes) -> OutputFile:
    path: str | None = None
    # A message field seen twice is merged, which for the wire format means
    # parsing the concatenation of its occurrences.
    digest_parts: list[bytes] = []
    is_executable = False
    for number, wire, value in _fields(data, "OutputFile"):
        if number == _OF_PATH:
            path = _utf8(_expect_bytes(value, wire, "OutputFile.path"), "OutputFile.path")
        elif number == _OF_DIGEST:
            digest_parts.append(_expect_bytes(value, wire, "OutputFile.digest"))
        elif number == _OF_IS_EXECUTABLE:
            is_executable = _expect_int(value, wire, "OutputFile.is_executable") != 0
    if path is None:
        raise DecodeError("OutputFile has no path (field 1)")
    if not digest_parts:
        raise DecodeError(f"OutputFile {path!r} has no digest (field 2)")
    return OutputFile(path, _decode_digest(b"".join(digest_parts)), is_executable)


def _decode_digest(data: bytes) -> Digest:
    hash_ = ""
    size = 0
    for number, wire, value in _fields(data, "Digest"):
        if number == _DG_HASH:
            hash_ = _utf8(_expect_bytes(value, wire, "Digest.hash"), "Digest.hash")
        elif number == _DG_SIZE_BYTES:
            size = _to_signed(_expect_int(value, wire, "Digest.size_bytes"), 64)
    return Digest(hash_, size)


def _fields(data: bytes, message: str) -> list[tuple[int, int, int | bytes]]:
    """Split `data` into (field number, wire type, value)."""
    fields: list[tuple[int, int, int | bytes]] = []
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _read_varint(data, pos, message)
        number, wire = key >> 3, key & 7
        if not 1 <= number <= _MAX_FIELD_NUMBER:
            raise DecodeError(f"{message}: invalid field number {number} at byte {pos}")
        if wire == _VARINT:
            value, pos = _read_varint(data, pos, message)
            fields.append((number, wire, value))
        elif wire == _LEN:
            length, pos = _read_varint(data, pos, message)
            if length > end - pos:
                raise DecodeError(
                    f"{message}: field {number} claims {length} bytes but only {end - pos} remain"
                )
            fields.append((number, wire, data[pos : pos + length]))
            pos += length
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if width > end - pos:
                raise DecodeError(f"{message}: field {number} is truncated")
            fields.append((number, wire, int.from_bytes(data[pos : pos + width], "little")))
            pos += width
        else:
            # Groups (3, 4) are proto2 only and REAPI is proto3; 6 and 7 are reserved.
            raise DecodeError(f"{message}: unexpected wire type {wire} for field {number}")
    return fields


def _read_varint(data: bytes, pos: int, message: str) -> tuple[int, int]:
    result = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= len(data):
            raise DecodeError(f"{message}: truncated varint at byte {pos}")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            # The tenth byte may only carry the 64th bit.
            if i == _MAX_VARINT_BYTES - 1 and byte > 1:
                raise DecodeError(f"{message}: varint overflows 64 bits at byte {pos - 1}")
            return result, pos
    raise DecodeError(f"{message}: varint longer than {_MAX_VARINT_BYTES} bytes at byte {pos}")


def _expect_bytes(value: int | bytes, wire: int, name: str) -> bytes:
    if wire != _LEN or not isinstance(value, bytes):
        raise DecodeError(f"{name}: expected a length-delimited field, got wire type {wire}")
    return value


def _expect_int(value: int | bytes, wire: int, name: str) -> int:
    if wire != _VARINT or not isinstance(value, int):
        raise DecodeError(f"{name}: expected a varint field, got wire type {wire}")
    return value


def _to_signed(value: int, bits: int) -> int:
    # int32 and int64 negatives are sign-extended to 64 bits on the wire.
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise DecodeError(f"value {value} does not fit in int{bits}")
    return value


def _utf8(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DecodeError(f"{name} is not valid UTF-8: {error}") from None


def _put_varint(out: bytearray, value: int) -> None:
    value &= (1 << 64) - 1
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_varint_field(out: bytearray, number: int, value: int) -> None:
    _put_varint(out, number << 3 | _VARINT)
    _put_varint(out, value)


def _put_bytes(out: bytearray, number: int, value: bytes) -> None:
    _put_varint(out, number << 3 | _LEN)
    _put_varint(out, len(value))
    out += value
