"""Blobs moved by the kernel: every fallback copies the same bytes, and a big blob restored
while another thread hashes it is still refused when one byte is wrong."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from rules.cache import CacheCorrupt, CacheError, LocalCache, blob_io, scan_tree
from rules.core import fsio

KEY = "3" * 64


def _copy(src: Path, dest: Path) -> None:
    size = src.stat().st_size
    with open(src, "rb") as s, open(dest, "xb") as d:
        fsio.copy_range(s.fileno(), d.fileno(), size)


@pytest.mark.parametrize("broken", [(), ("copy_file_range",), ("copy_file_range", "sendfile")])
def test_each_way_of_copying_gives_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: tuple[str, ...]
) -> None:
    # A filesystem pair that cannot do a kernel copy answers EXDEV or EINVAL:
    # the copy goes on the next way, from the offset it had reached.
    def refuse(*_: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    for name in broken:
        monkeypatch.setattr(os, name, refuse)
    data = os.urandom((3 << 20) + 17)
    (tmp_path / "src").write_bytes(data)
    _copy(tmp_path / "src", tmp_path / "dest")
    assert (tmp_path / "dest").read_bytes() == data


def test_a_source_shorter_than_promised_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"x" * 100)
    with open(tmp_path / "src", "rb") as s, open(tmp_path / "dest", "xb") as d, \
            pytest.raises(OSError, match="ended after 100 of 200"):
        fsio.copy_range(s.fileno(), d.fileno(), 200)


def test_a_real_io_error_is_not_taken_for_a_missing_feature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_: object) -> int:
        raise OSError(errno.EIO, "disk on fire")

    monkeypatch.setattr(os, "copy_file_range", fail)
    (tmp_path / "src").write_bytes(b"x" * 100)
    with pytest.raises(OSError, match="disk on fire"):
        _copy(tmp_path / "src", tmp_path / "dest")


def _big_tree(root: Path) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph")
    (root / "variables" / "data").write_bytes(os.urandom(blob_io.PARALLEL_COPY + 4097))
    return root


def test_a_big_blob_restores_byte_for_byte(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    tree = _big_tree(tmp_path / "out")
    result = cache.store(KEY, tree, {}, "//m:big", scan_tree(tree))
    cache.materialize(KEY, result, tmp_path / "restored")
    assert scan_tree(tmp_path / "restored") == scan_tree(tree)


def test_a_big_blob_with_one_flipped_byte_is_refused_and_evicted(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    tree = _big_tree(tmp_path / "out")
    result = cache.store(KEY, tree, {}, "//m:big")
    big = max(result.files, key=lambda f: f.size)
    blob = cache.cas_path(big.sha256)
    blob.chmod(0o644)
    with open(blob, "r+b") as handle:  # same size, one bit off: only the hash sees it
        handle.seek(big.size // 2)
        byte = handle.read(1)
        handle.seek(big.size // 2)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(CacheCorrupt, match="corrupt"):
        cache.materialize(KEY, result, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    assert not blob.exists() and not cache.ac_path(KEY).exists()


def test_a_file_that_changed_since_its_scan_is_not_stored(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    tree = _big_tree(tmp_path / "out")
    scanned = scan_tree(tree)
    (tree / "saved_model.pb").write_bytes(b"another graph")
    with pytest.raises(CacheError, match="changed after it was hashed"):
        cache.store(KEY, tree, {}, "//m:big", scanned)
    assert not cache.ac_path(KEY).exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".tmp")]


def test_stored_blobs_are_read_only_and_not_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the build's scan given, the store copies in the kernel: no byte of
    # the artifact is hashed a second time (the scan hashed it once).
    tree = _big_tree(tmp_path / "out")
    scanned = scan_tree(tree)
    hashed: list[int] = []
    real = hashlib.sha256

    class Counting:
        def __init__(self, data: bytes = b"") -> None:
            self._h = real(data)
            hashed.append(len(data))

        def update(self, data: bytes) -> None:
            hashed.append(len(data))
            self._h.update(data)

        def hexdigest(self) -> str:
            return self._h.hexdigest()

    monkeypatch.setattr(hashlib, "sha256", Counting)
    cache = LocalCache(tmp_path / "cache")
    result = cache.store(KEY, tree, {}, "//m:big", scanned)
    assert sum(hashed) < 4096, f"the store hashed {sum(hashed)} bytes again"
    for entry in result.files:
        assert cache.cas_path(entry.sha256).stat().st_mode & 0o777 == 0o444


def test_a_blob_that_gc_takes_before_its_entry_is_written_is_stored_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A gc whose scan predates the entry may unlink a fresh blob before the
    # store has written the entry and stamped its blobs: the entry must not be
    # left pointing at nothing (test_e2e_concurrency's gc-while-building).
    from rules.cache import local as local_module

    cache = LocalCache(tmp_path / "cache")
    tree = _big_tree(tmp_path / "out")
    scanned = scan_tree(tree)
    taken = cache.cas_path(scanned[0][0].sha256)
    real = local_module.fsync_dir
    struck: list[Path] = []

    def gc_strikes(path: Path) -> None:
        if path == cache.ac_path(KEY).parent and taken.exists():
            taken.unlink()
            struck.append(taken)
        real(path)

    monkeypatch.setattr(local_module, "fsync_dir", gc_strikes)
    result = cache.store(KEY, tree, {}, "//m:big", scanned)
    monkeypatch.undo()
    assert struck == [taken], "the simulated gc never ran"
    for entry in result.files:
        assert cache.cas_path(entry.sha256).exists(), entry.path
    cache.materialize(KEY, cache.lookup(KEY), tmp_path / "restored")
    assert scan_tree(tmp_path / "restored") == scanned
