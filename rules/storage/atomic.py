"""Atomic writes: tmp file beside the destination, fsync, then os.replace."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def tmp_sibling(dest: Path, tag: str = "tmp") -> Path:
    """A unique name in dest's folder, so the final rename never crosses filesystems."""
    return dest.with_name(f".{dest.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable; some filesystems refuse, which is harmless here."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(dest: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `dest` with `data` so readers see the old or the new file, never a mix."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(dest)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(dest.parent)


def write_json(dest: Path, value: Any, *, durable: bool = True) -> None:
    """Atomically write `value` as indented, key-sorted JSON (readable and diffable)."""
    text = json.dumps(value, indent=1, sort_keys=True) + "\n"
    write_bytes(dest, text.encode("utf-8"), durable=durable)


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable (treated as absent)."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None
