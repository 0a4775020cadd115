"""Tests for rules.core.hashing: canonical JSON and sha256 helpers."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rules.core.hashing import canonical_json, sha256_bytes, sha256_file, sha256_json


def test_canonical_json_sorts_keys_and_drops_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": None, "c": True}]}) == (
        '{"a":[1,{"c":true,"d":null}],"b":1}'
    )


def test_equal_values_give_equal_text_whatever_the_insertion_order() -> None:
    one = {"x": {"b": 2, "a": 1}, "y": [3, 2]}
    two = {"y": [3, 2], "x": {"a": 1, "b": 2}}
    assert canonical_json(one) == canonical_json(two)
    assert sha256_json(one) == sha256_json(two)


def test_list_order_matters() -> None:
    assert sha256_json([1, 2]) != sha256_json([2, 1])


def test_canonical_json_is_ascii_and_round_trips() -> None:
    value = {"name": "modèle ✓", "n": 1.5, "nested": {"k": ["é"]}}
    text = canonical_json(value)
    assert text.isascii()
    assert json.loads(text) == value


def test_sha256_helpers_are_lowercase_hex_sha256() -> None:
    assert sha256_bytes(b"abc") == hashlib.sha256(b"abc").hexdigest()
    expected = hashlib.sha256(b'{"a":1}').hexdigest()
    assert sha256_json({"a": 1}) == expected
    assert len(expected) == 64 and expected == expected.lower()


def test_sha256_file_matches_hashlib_across_chunk_boundaries(tmp_path: Path) -> None:
    for size in (0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 17):
        data = os.urandom(size)
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        assert sha256_file(path) == hashlib.sha256(data).hexdigest(), size
