"""Canonical JSON and sha256 helpers shared by analysis and storage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """Serialise `value` so equal values always give equal text.

    Sorted keys, no whitespace and ASCII-only output: the text is hashed, so
    any freedom in the encoding would split one action into several keys.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_bytes(data: bytes) -> str:
    """Lowercase hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_json(value: Any) -> str:
    """Lowercase hex sha256 of the canonical JSON of `value`."""
    return sha256_bytes(canonical_json(value).encode("ascii"))


def sha256_file(path: Path) -> str:
    """Lowercase hex sha256 of a file, read in 1 MiB chunks so size does not matter."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
