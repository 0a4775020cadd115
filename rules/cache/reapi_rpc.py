"""Wire codec for the REAPI v2 and ByteStream request/response messages the gRPC cache sends.

The project's own protobuf codec (rules.cache.reapi) is extended rather than
generated code from `.proto` files with `protobuf`: these dozen messages are
flat, their field numbers are frozen by the REAPI's compatibility promise, and
a `protobuf` runtime here would have to agree with the one TensorFlow pins in
the same environment (a gencode/runtime mismatch is an import error). grpcio
is called with raw bytes (no serializer), so it needs no protobuf at all.
Field numbers are from build/bazel/remote/execution/v2/remote_execution.proto,
google/bytestream/bytestream.proto and google/rpc/status.proto.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rules.cache.reapi import (
    DecodeError,
    Digest,
    _decode_digest,
    _expect_bytes,
    _expect_int,
    _fields,
    _put_bytes,
    _put_varint_field,
    _read_varint,
    _to_signed,
    _utf8,
)

# DigestFunction.Value: the only one rules_keras hashes with.
SHA256 = 1
_LEN = 2

CAPABILITIES = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities"
GET_ACTION_RESULT = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult"
UPDATE_ACTION_RESULT = "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult"
FIND_MISSING_BLOBS = "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs"
BATCH_UPDATE_BLOBS = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs"
BATCH_READ_BLOBS = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs"
BYTESTREAM_READ = "/google.bytestream.ByteStream/Read"
BYTESTREAM_WRITE = "/google.bytestream.ByteStream/Write"


@dataclass(frozen=True)
class Status:
    """google.rpc.Status of one blob in a batch: a gRPC code (0 is OK) and a message."""

    code: int = 0
    message: str = ""


@dataclass(frozen=True)
class Capabilities:
    """What ServerCapabilities.cache_capabilities says about the cache."""

    digest_functions: tuple[int, ...]
    update_enabled: bool
    max_batch_total_size_bytes: int
    """0 means the server sets no limit of its own."""


@dataclass(frozen=True)
class BlobResponse:
    """One blob of a BatchReadBlobs (data) or BatchUpdateBlobs (no data) response."""

    digest: Digest
    status: Status
    data: bytes = b""


def get_capabilities_request(instance: str) -> bytes:
    out = bytearray()
    _put_text(out, 1, instance)
    return bytes(out)


def decode_capabilities(data: bytes) -> Capabilities:
    """The cache part of ServerCapabilities; a server without one offers no digest function."""
    functions: list[int] = []
    update = False
    max_batch = 0
    for number, wire, value in _fields(data, "ServerCapabilities"):
        if number != 1:
            continue
        cache = _expect_bytes(value, wire, "cache_capabilities")
        for c_number, c_wire, c_value in _fields(cache, "CacheCapabilities"):
            if c_number == 1:
                functions.extend(_enums(c_value, c_wire, "digest_functions"))
            elif c_number == 2:
                updates = _expect_bytes(c_value, c_wire, "action_cache_update_capabilities")
                for u_number, u_wire, u_value in _fields(updates, "ActionCacheUpdateCapabilities"):
                    if u_number == 1:
                        update = _expect_int(u_value, u_wire, "update_enabled") != 0
            elif c_number == 4:
                max_batch = _to_signed(_expect_int(c_value, c_wire, "max_batch_total_size"), 64)
    return Capabilities(tuple(functions), update, max(max_batch, 0))


def get_action_result_request(instance: str, action: Digest) -> bytes:
    out = bytearray()
    _put_text(out, 1, instance)
    _put_bytes(out, 2, encode_digest(action))
    _put_varint_field(out, 6, SHA256)
    return bytes(out)


def update_action_result_request(instance: str, action: Digest, result: bytes) -> bytes:
    """`result` is an already encoded ActionResult (rules.cache.reapi), embedded as is."""
    out = bytearray()
    _put_text(out, 1, instance)
    _put_bytes(out, 2, encode_digest(action))
    _put_bytes(out, 3, result)
    _put_varint_field(out, 5, SHA256)
    return bytes(out)


def find_missing_blobs_request(instance: str, digests: Iterable[Digest]) -> bytes:
    out = bytearray()
    _put_text(out, 1, instance)
    for digest in digests:
        _put_bytes(out, 2, encode_digest(digest))
    _put_varint_field(out, 3, SHA256)
    return bytes(out)


def decode_find_missing_blobs(data: bytes) -> list[Digest]:
    return [
        _decode_digest(_expect_bytes(value, wire, "missing_blob_digests"))
        for number, wire, value in _fields(data, "FindMissingBlobsResponse")
        if number == 2
    ]


def batch_update_blobs_request(instance: str, blobs: Iterable[tuple[Digest, bytes]]) -> bytes:
    out = bytearray()
    _put_text(out, 1, instance)
    for digest, data in blobs:
        request = bytearray()
        _put_bytes(request, 1, encode_digest(digest))
        _put_bytes(request, 2, data)
        _put_bytes(out, 2, bytes(request))
    _put_varint_field(out, 5, SHA256)
    return bytes(out)


def batch_read_blobs_request(instance: str, digests: Iterable[Digest]) -> bytes:
    out = bytearray()
    _put_text(out, 1, instance)
    for digest in digests:
        _put_bytes(out, 2, encode_digest(digest))
    _put_varint_field(out, 4, SHA256)
    return bytes(out)


def decode_batch_responses(data: bytes, *, with_data: bool) -> list[BlobResponse]:
    """Batch{Read,Update}BlobsResponse.responses; status is field 3 on reads, 2 on updates."""
    status_field = 3 if with_data else 2
    responses = []
    for number, wire, value in _fields(data, "BatchBlobsResponse"):
        if number != 1:
            continue
        digest, status, blob = Digest("", 0), Status(), b""
        for r_number, r_wire, r_value in _fields(_expect_bytes(value, wire, "responses"),
                                                 "BatchBlobsResponse.Response"):
            if r_number == 1:
                digest = _decode_digest(_expect_bytes(r_value, r_wire, "Response.digest"))
            elif r_number == status_field:
                status = _decode_status(_expect_bytes(r_value, r_wire, "Response.status"))
            elif with_data and r_number == 2:
                blob = _expect_bytes(r_value, r_wire, "Response.data")
        responses.append(BlobResponse(digest, status, blob))
    return responses


def read_request(resource: str, offset: int = 0) -> bytes:
    out = bytearray()
    _put_text(out, 1, resource)
    if offset:
        _put_varint_field(out, 2, offset)
    return bytes(out)


def decode_read_response(data: bytes) -> bytes:
    for number, wire, value in _fields(data, "ReadResponse"):
        if number == 10:
            return _expect_bytes(value, wire, "ReadResponse.data")
    return b""


def write_request(resource: str, offset: int, data: bytes, *, finish: bool) -> bytes:
    """A WriteRequest; only the first of a stream needs `resource`, so later ones pass ''."""
    out = bytearray()
    _put_text(out, 1, resource)
    if offset:
        _put_varint_field(out, 2, offset)
    if finish:
        _put_varint_field(out, 3, 1)
    _put_bytes(out, 10, data)
    return bytes(out)


def decode_write_response(data: bytes) -> int:
    for number, wire, value in _fields(data, "WriteResponse"):
        if number == 1:
            return _to_signed(_expect_int(value, wire, "committed_size"), 64)
    return 0


def encode_digest(digest: Digest) -> bytes:
    out = bytearray()
    _put_text(out, 1, digest.hash)
    if digest.size_bytes:
        _put_varint_field(out, 2, digest.size_bytes)
    return bytes(out)


def _decode_status(data: bytes) -> Status:
    code, message = 0, ""
    for number, wire, value in _fields(data, "Status"):
        if number == 1:
            code = _to_signed(_expect_int(value, wire, "Status.code"), 32)
        elif number == 2:
            message = _utf8(_expect_bytes(value, wire, "Status.message"), "Status.message")
    return Status(code, message)


def _enums(value: int | bytes, wire: int, name: str) -> list[int]:
    """A repeated enum: one varint, or (as proto3 writes it) a packed run of them."""
    if wire != _LEN:
        return [_expect_int(value, wire, name)]
    packed = _expect_bytes(value, wire, name)
    numbers = []
    pos = 0
    while pos < len(packed):
        number, pos = _read_varint(packed, pos, name)
        numbers.append(number)
    return numbers


def _put_text(out: bytearray, number: int, text: str) -> None:
    # proto3 leaves empty strings off the wire.
    if text:
        _put_bytes(out, number, text.encode("utf-8"))


__all__ = ["DecodeError", "Digest"]
