"""Tests for rules.core.digests: the stat-keyed sha256 cache."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from workspace_helpers import OLD, age, write

import rules.core.digests as digests_module
from rules.core.digests import RACY_SECONDS, DigestCache


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files DigestCache actually reads (counting the real sha256_file)."""
    calls: list[str] = []
    real: Callable[[Path], str] = digests_module.sha256_file

    def counting(path: Path) -> str:
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(digests_module, "sha256_file", counting)
    return calls


def test_digest_is_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    path = write(tmp_path, "big.bin", data)
    assert DigestCache(tmp_path / "d.json").digest(path) == hashlib.sha256(data).hexdigest()


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DigestCache(tmp_path / "d.json").digest(tmp_path / "gone")


def test_unchanged_file_is_not_rehashed(tmp_path: Path, hashed: list[str]) -> None:
    path = write(tmp_path, "f", "content")
    age(path)
    cache = DigestCache(tmp_path / "d.json")
    first = cache.digest(path)
    assert cache.digest(path) == first
    assert hashed == ["f"]


def test_size_change_is_rehashed(tmp_path: Path, hashed: list[str]) -> None:
    path = write(tmp_path, "f", "content")
    age(path)
    cache = DigestCache(tmp_path / "d.json")
    before = cache.digest(path)
    path.write_text("longer content")
    age(path)
    after = cache.digest(path)
    assert after != before and after == hashlib.sha256(b"longer content").hexdigest()
    assert hashed == ["f", "f"]


def test_mtime_change_is_rehashed(tmp_path: Path, hashed: list[str]) -> None:
    path = write(tmp_path, "f", "aaaa")
    age(path)
    cache = DigestCache(tmp_path / "d.json")
    cache.digest(path)
    path.write_text("bbbb")
    age(path, OLD + 1)
    assert cache.digest(path) == hashlib.sha256(b"bbbb").hexdigest()
    assert hashed == ["f", "f"]


def test_a_file_replaced_by_rename_is_rehashed(tmp_path: Path, hashed: list[str]) -> None:
    path = write(tmp_path, "f", "aaaa")
    age(path)
    cache = DigestCache(tmp_path / "d.json")
    cache.digest(path)
    replacement = write(tmp_path, "new", "bbbb")
    age(replacement)
    os.replace(replacement, path)
    assert cache.digest(path) == hashlib.sha256(b"bbbb").hexdigest()
    assert hashed == ["f", "f"]


def test_racy_entries_are_not_remembered(tmp_path: Path, hashed: list[str]) -> None:
    path = write(tmp_path, "young", "x")
    now = time.time()
    os.utime(path, (now, now - RACY_SECONDS / 2))
    cache = DigestCache(tmp_path / "d.json")
    cache.digest(path)
    cache.digest(path)
    assert hashed == ["young", "young"]
    cache.save()
    assert not (tmp_path / "d.json").exists()


def test_save_and_load_round_trip(tmp_path: Path, hashed: list[str]) -> None:
    paths = [write(tmp_path, f"f{i}", str(i)) for i in range(3)]
    for path in paths:
        age(path)
    cache = DigestCache(tmp_path / "state" / "d.json")
    values = [cache.digest(p) for p in paths]
    cache.save()
    saved = json.loads((tmp_path / "state" / "d.json").read_text())
    assert sorted(saved) == sorted(str(p) for p in paths)
    hashed.clear()
    reloaded = DigestCache(tmp_path / "state" / "d.json")
    assert [reloaded.digest(p) for p in paths] == values
    assert hashed == []


def test_save_without_new_entries_does_not_write(tmp_path: Path) -> None:
    path = write(tmp_path, "f", "x")
    age(path)
    cache = DigestCache(tmp_path / "d.json")
    cache.digest(path)
    cache.save()
    (tmp_path / "d.json").unlink()
    cache.digest(path)
    cache.save()
    DigestCache(tmp_path / "d.json").save()
    assert not (tmp_path / "d.json").exists()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "", "null"])
def test_corrupt_digests_file_is_ignored(tmp_path: Path, text: str, hashed: list[str]) -> None:
    path = write(tmp_path, "f", "data")
    age(path)
    write(tmp_path, "d.json", text)
    cache = DigestCache(tmp_path / "d.json")
    assert cache.digest(path) == hashlib.sha256(b"data").hexdigest()
    cache.save()
    assert str(path) in json.loads((tmp_path / "d.json").read_text())


def test_unwritable_cache_location_is_harmless(tmp_path: Path) -> None:
    path = write(tmp_path, "f", "data")
    age(path)
    blocker = write(tmp_path, "blocker", "a file, not a folder")
    cache = DigestCache(blocker / "d.json")
    cache.digest(path)
    cache.save()


def test_a_digests_entry_of_the_wrong_shape_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "f", "data")
    write(tmp_path, "d.json", json.dumps({str(path): 5}))
    assert DigestCache(tmp_path / "d.json").digest(path) == hashlib.sha256(b"data").hexdigest()


def test_an_edit_in_place_that_restores_size_and_mtime_is_seen(tmp_path: Path) -> None:
    """cp -p, rsync -a and tar restore mtimes; the ctime in the stamp still moves."""
    path = tmp_path / "w.weights.h5"
    path.write_bytes(b"\x00" * 64)
    age(path)
    cache = DigestCache(tmp_path / "d.json")
    before = cache.digest(path)
    st = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(10)
        handle.write(b"\x01")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert cache.digest(path) != before


def test_record_remembers_a_fresh_file_it_was_told_about(tmp_path: Path) -> None:
    path = tmp_path / "saved_model.pb"
    path.write_bytes(b"published")
    cache = DigestCache(tmp_path / "d.json")
    cache.record(path, "f" * 64)  # what the build hashed while writing it
    assert cache.digest(path) == "f" * 64
    path.write_bytes(b"edited!!!")
    assert cache.digest(path) != "f" * 64
