"""Tests for the local content-addressed cache: round trips, eviction, corruption, crash safety."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rules.cache import (
    ActionResult,
    CacheCorrupt,
    CacheError,
    CacheMiss,
    FileEntry,
    LocalCache,
    scan_tree,
)
from rules.cache.local import TMP_PREFIX
from rules.cache.reapi import ActionResultMessage, Digest, OutputFile, encode_action_result
from rules.core.hashing import sha256_bytes, sha256_file

REPO = Path(__file__).resolve().parents[1]
KEY = "1" * 64
KEY2 = "2" * 64


def make_tree(root: Path, seed: int = 0) -> Path:
    """A SavedModel-shaped tree with nested dirs, odd modes, empty dirs and a >1 MiB file."""
    rng = random.Random(seed)
    (root / "variables").mkdir(parents=True)
    (root / "assets").mkdir()
    (root / "fingerprints" / "empty" / "deeper").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(rng.randbytes(5000))
    (root / "variables" / "variables.index").write_bytes(rng.randbytes(300))
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(rng.randbytes(1 << 21))
    (root / "keras_metadata.pb").write_bytes(b"")
    (root / "dup_a").write_bytes(b"same bytes")
    (root / "dup_b").write_bytes(b"same bytes")
    run = root / "run.sh"
    run.write_bytes(b"#!/bin/sh\necho hi\n")
    run.chmod(0o750)
    (root / "variables" / "variables.index").chmod(0o600)
    (root / "keras_metadata.pb").chmod(0o444)
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every path under root with its type, permission bits and content."""
    out: dict[str, tuple[str, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = ("dir", 0, b"")
        for name in filenames:
            path = Path(dirpath, name)
            mode = stat.S_IMODE(path.lstat().st_mode)
            out[path.relative_to(root).as_posix()] = ("file", mode, path.read_bytes())
    return out


def test_store_lookup_materialize_reproduces_the_tree(tmp_path: Path) -> None:
    artifact = make_tree(tmp_path / "out")
    cache = LocalCache(tmp_path / "cache")
    stored = cache.store(KEY, artifact, {"endpoints": ["serve"], "verified": True})
    assert stored.dirs == ("assets", "fingerprints/empty/deeper")

    hit = cache.lookup(KEY)
    assert hit == stored
    assert hit.metadata == {"endpoints": ["serve"], "verified": True}
    dest = tmp_path / "restored"
    cache.materialize(KEY, hit, dest)
    assert snapshot(dest) == snapshot(artifact)


def test_materialize_copies_and_never_hardlinks(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    result = cache.store(KEY, make_tree(tmp_path / "out"), {})
    dest = tmp_path / "restored"
    cache.materialize(KEY, result, dest)
    for entry in result.files:
        restored = (dest / entry.path).stat()
        blob = cache.cas_path(entry.sha256).stat()
        assert restored.st_nlink == 1
        assert restored.st_ino != blob.st_ino


def test_single_file_artifact_restores_under_any_name(tmp_path: Path) -> None:
    artifact = tmp_path / "model.keras"
    artifact.write_bytes(b"zip bytes")
    artifact.chmod(0o640)
    cache = LocalCache(tmp_path / "cache")
    stored = cache.store(KEY, artifact, {"format": "keras"})
    assert stored.kind == "file"
    assert [f.path for f in stored.files] == ["model.keras"]
    hit = cache.lookup(KEY)
    assert hit is not None
    dest = tmp_path / "elsewhere" / ".tmp-model.keras"
    dest.parent.mkdir()
    cache.materialize(KEY, hit, dest)
    assert dest.read_bytes() == b"zip bytes"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640


def test_blobs_are_read_only_and_named_by_their_hash(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    result = cache.store(KEY, make_tree(tmp_path / "out"), {})
    for entry in result.files:
        blob = cache.cas_path(entry.sha256)
        assert blob.parent.name == entry.sha256[:2]
        assert stat.S_IMODE(blob.stat().st_mode) == 0o444
        assert sha256_file(blob) == entry.sha256
    assert cache.ac_path(KEY).parent.name == KEY[:2]


def test_store_never_rewrites_an_existing_entry(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    first = cache.store(KEY, make_tree(tmp_path / "a", seed=1), {"run": 1})
    inodes = {p: p.stat().st_ino for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    again = cache.store(KEY, make_tree(tmp_path / "b", seed=2), {"run": 2})
    assert again == first
    after = {p: p.stat().st_ino for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert after == inodes

    # Another key sharing blobs reuses them without rewriting either.
    cache.store(KEY2, tmp_path / "a", {"run": 3})
    for path, inode in inodes.items():
        assert path.stat().st_ino == inode


def test_lookup_of_unknown_key_is_a_miss(tmp_path: Path) -> None:
    assert LocalCache(tmp_path / "nothing-here").lookup(KEY) is None


def test_missing_blob_is_a_miss_and_evicts_the_entry(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    result = cache.store(KEY, make_tree(tmp_path / "out"), {})
    cache.cas_path(result.files[0].sha256).unlink()
    assert cache.lookup(KEY) is None
    assert not cache.ac_path(KEY).exists()


def test_blob_of_wrong_size_is_a_miss_and_both_are_evicted(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    result = cache.store(KEY, make_tree(tmp_path / "out"), {})
    blob = cache.cas_path(result.files[-1].sha256)
    blob.chmod(0o644)
    with open(blob, "ab") as handle:
        handle.write(b"!")
    with pytest.raises(CacheCorrupt, match="has 301 bytes, not 300"):
        cache.lookup(KEY)
    assert not cache.ac_path(KEY).exists()
    assert not blob.exists()
    assert cache.lookup(KEY) is None


@pytest.mark.parametrize("garbage", [b"", b"\xff\xff\xff", b"\x12\x7f", b"\x12\x02\x0a\x00"])
def test_undecodable_entry_is_a_miss_and_evicted(tmp_path: Path, garbage: bytes) -> None:
    cache = LocalCache(tmp_path / "cache")
    ac = cache.ac_path(KEY)
    ac.parent.mkdir(parents=True)
    ac.write_bytes(garbage)
    # An empty body is a well-formed, empty ActionResult, and still no entry of ours.
    with pytest.raises(CacheCorrupt, match="is corrupt"):
        cache.lookup(KEY)
    assert not ac.exists()


def test_an_entry_naming_another_key_is_evicted(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    cache.store(KEY2, make_tree(tmp_path / "out"), {})
    ac = cache.ac_path(KEY)
    ac.parent.mkdir(parents=True)
    ac.write_bytes(cache.ac_path(KEY2).read_bytes())
    with pytest.raises(CacheCorrupt, match="names action 222222222222"):
        cache.lookup(KEY)
    assert not ac.exists()
    assert cache.lookup(KEY2) is not None


@pytest.mark.parametrize("path", ["../../escape", "/tmp/abs", "a\\b", "", "a/../b"])
def test_unsafe_path_in_entry_is_a_miss_and_evicted(tmp_path: Path, path: str) -> None:
    cache = LocalCache(tmp_path / "cache")
    cache.store(KEY2, make_tree(tmp_path / "out"), {})
    sha = sha256_bytes(b"same bytes")  # a blob that really is in CAS
    ac = cache.ac_path(KEY)
    ac.parent.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"_record": 2, "_key": KEY, "_label": "", "_dirs": [], "_kind": "directory",
                         "_files": {path: [sha, 10, 0o644]}}).encode()
    ac.write_bytes(encode_action_result(
        ActionResultMessage((OutputFile(path, Digest(sha, 10)),), 0, record)))
    with pytest.raises(CacheCorrupt, match="is corrupt"):
        cache.lookup(KEY)
    assert not ac.exists()
    assert not (tmp_path / "escape").exists()


def test_flipped_byte_raises_corrupt_and_evicts_blob_and_entry(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    result = cache.store(KEY, make_tree(tmp_path / "out"), {})
    victim = next(f for f in result.files if f.path.startswith("variables/variables.data"))
    blob = cache.cas_path(victim.sha256)
    blob.chmod(0o644)
    with open(blob, "r+b") as handle:
        handle.seek(123_456)
        byte = handle.read(1)
        handle.seek(123_456)
        handle.write(bytes([byte[0] ^ 0x01]))
    hit = cache.lookup(KEY)  # same size, so only the re-hash can tell
    assert hit is not None
    dest = tmp_path / "restored"
    with pytest.raises(CacheCorrupt, match="corrupt"):
        cache.materialize(KEY, hit, dest)
    assert not blob.exists()
    assert not cache.ac_path(KEY).exists()
    assert not dest.exists()
    # Other entries' blobs are untouched.
    assert cache.cas_path(result.files[0].sha256).exists()


def test_blob_vanishing_after_lookup_is_a_miss_not_a_crash(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    cache.store(KEY, make_tree(tmp_path / "out"), {})
    hit = cache.lookup(KEY)
    assert hit is not None
    cache.cas_path(hit.files[-1].sha256).unlink()  # what a concurrent gc does
    dest = tmp_path / "restored"
    with pytest.raises(CacheMiss):
        cache.materialize(KEY, hit, dest)
    assert not dest.exists()
    assert not cache.ac_path(KEY).exists()


def test_materialize_refuses_an_existing_destination(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    result = cache.store(KEY, make_tree(tmp_path / "out"), {})
    (tmp_path / "taken").mkdir()
    with pytest.raises(CacheError, match="already exists"):
        cache.materialize(KEY, result, tmp_path / "taken")


def test_hit_touches_the_entry_and_restore_touches_the_blobs(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    result = cache.store(KEY, make_tree(tmp_path / "out"), {})
    paths = [cache.ac_path(KEY)] + [cache.cas_path(f.sha256) for f in result.files]
    for path in paths:
        os.utime(path, (1_000_000, 1_000_000))
    hit = cache.lookup(KEY)
    assert hit is not None
    assert cache.ac_path(KEY).stat().st_mtime > time.time() - 60
    cache.materialize(KEY, hit, tmp_path / "restored")
    assert all(p.stat().st_mtime > time.time() - 60 for p in paths)


def test_store_gives_blobs_the_entry_timestamp(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    result = cache.store(KEY, make_tree(tmp_path / "out"), {})
    stamp = cache.ac_path(KEY).stat().st_mtime_ns
    assert {cache.cas_path(f.sha256).stat().st_mtime_ns for f in result.files} == {stamp}


def test_symlink_in_artifact_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    artifact = make_tree(tmp_path / "out")
    (artifact / "link").symlink_to("saved_model.pb")
    cache = LocalCache(tmp_path / "cache")
    with pytest.raises(CacheError, match="symlink"):
        cache.store(KEY, artifact, {})
    assert cache.lookup(KEY) is None


def test_filesystem_errors_surface_as_cache_error(tmp_path: Path) -> None:
    root = tmp_path / "not-a-dir"
    root.write_text("a file where the cache should be")
    cache = LocalCache(root)
    with pytest.raises(CacheError):
        cache.lookup(KEY)
    with pytest.raises(CacheError):
        cache.store(KEY, make_tree(tmp_path / "out"), {})


def test_keys_must_be_sha256_hex(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        LocalCache(tmp_path).lookup("../../etc/passwd")


def test_scan_tree_lists_files_sorted_and_only_truly_empty_dirs(tmp_path: Path) -> None:
    files, dirs = scan_tree(make_tree(tmp_path / "out"))
    assert [f.path for f in files] == sorted(f.path for f in files)
    assert dirs == ("assets", "fingerprints/empty/deeper")
    run = next(f for f in files if f.path == "run.sh")
    assert run == FileEntry("run.sh", sha256_bytes(b"#!/bin/sh\necho hi\n"), 18, 0o750)


def test_stats_counts_entries_blobs_and_bytes(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    empty = cache.stats()
    assert (empty.ac_entries, empty.cas_blobs, empty.total_bytes) == (0, 0, 0)
    assert empty.tmp_files == 0
    result = cache.store(KEY, make_tree(tmp_path / "out"), {})
    stats = cache.stats()
    blobs = {f.sha256: f.size for f in result.files}
    assert stats.ac_entries == 1
    assert stats.cas_blobs == len(blobs)
    assert stats.total_bytes == sum(blobs.values()) + cache.ac_path(KEY).stat().st_size
    assert stats.tmp_files == 0


# Stores fresh trees under fresh keys as fast as it can until it is killed.
_STORER = """
import os, sys
from pathlib import Path
from rules.cache import LocalCache
cache, work = LocalCache(Path(sys.argv[1])), Path(sys.argv[2])
print("ready", flush=True)
n = 0
while True:
    n += 1
    tree = work / f"t{n}"
    for i in range(40):
        (tree / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (tree / f"d{i % 4}" / f"f{i}").write_bytes(os.urandom(4096 if i else 1 << 21))
    cache.store(os.urandom(32).hex(), tree, {"n": n})
    print("stored", flush=True)
"""


def test_sigkill_mid_store_never_leaves_an_entry_without_its_blobs(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for run in range(6):
        work = tmp_path / f"work{run}"
        work.mkdir()
        child = subprocess.Popen(
            [sys.executable, "-c", _STORER, str(root), str(work)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        # One complete store per run, then a kill at a random point of the
        # following ones: waiting on progress, not the clock, keeps this
        # meaningful on a loaded machine.
        assert child.stdout.readline() == b"stored\n"
        time.sleep(rng.uniform(0.0, 0.2))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL

    cache = LocalCache(root)
    entries = [p for p in (root / "ac").glob("*/*") if not p.name.startswith(TMP_PREFIX)]
    assert len(entries) >= 6
    for ac in entries:
        result = ActionResult.from_reapi(ac.read_bytes())
        for entry in result.files:
            blob = cache.cas_path(entry.sha256)
            assert sha256_file(blob) == entry.sha256, f"{ac.name} references a bad blob"
        assert cache.lookup(ac.name) is not None
    for blob in (root / "cas").glob("*/*"):
        if blob.name.startswith(TMP_PREFIX):
            continue
        assert sha256_file(blob) == blob.name
        assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    # Leftover tmp files exist only under tmp names, which no reader ever opens.
    for leftover in root.rglob(f"{TMP_PREFIX}*"):
        assert leftover.parent.parent.name in ("ac", "cas")
