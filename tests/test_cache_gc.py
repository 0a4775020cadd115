"""Tests for cache garbage collection: LRU order, tmp files, and running beside live builds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rules.cache import CacheError, LocalCache, collect
from rules.cache.local import TMP_PREFIX
from rules.core.hashing import sha256_bytes

REPO = Path(__file__).resolve().parents[1]


def put(root: Path, area: str, name: str, size: int, mtime: float, shard: str = "") -> Path:
    """Place a file of `size` bytes as an entry; gc looks only at names, sizes and mtimes."""
    path = root / area / (shard or name[:2]) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
    return path


def name(tag: str) -> str:
    return sha256_bytes(tag.encode())


def test_removes_least_recently_used_first_and_ac_before_cas_on_ties(tmp_path: Path) -> None:
    oldest = put(tmp_path, "cas", name("oldest"), 100, 1_000)
    tie_ac = put(tmp_path, "ac", name("tie-ac"), 100, 2_000)
    tie_cas = put(tmp_path, "cas", name("tie-cas"), 100, 2_000)
    newest = put(tmp_path, "ac", name("newest"), 100, 3_000)

    report = collect(tmp_path, max_bytes=200)

    assert not oldest.exists()
    assert not tie_ac.exists()
    assert tie_cas.exists()
    assert newest.exists()
    assert (report.removed_ac, report.removed_cas, report.freed_bytes) == (1, 1, 200)
    assert report.remaining_bytes == 200


def test_under_the_limit_nothing_is_removed(tmp_path: Path) -> None:
    put(tmp_path, "ac", name("a"), 10, 1_000)
    report = collect(tmp_path, max_bytes=10)
    assert (report.removed_ac, report.removed_cas, report.remaining_bytes) == (0, 0, 10)


def test_limit_zero_empties_the_cache_but_keeps_shard_dirs(tmp_path: Path) -> None:
    for i in range(20):
        put(tmp_path, "cas" if i % 2 else "ac", name(str(i)), 7, 1_000 + i)
    report = collect(tmp_path, max_bytes=0)
    assert report.removed_ac + report.removed_cas == 20
    assert report.remaining_bytes == 0
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    assert (tmp_path / "ac").is_dir()


def test_stale_tmp_files_go_young_ones_and_strangers_stay(tmp_path: Path) -> None:
    now = time.time()
    stale = put(tmp_path, "cas", f"{TMP_PREFIX}old.123.abc", 50, now - 7200, shard="ab")
    young = put(tmp_path, "cas", f"{TMP_PREFIX}new.123.abc", 50, now - 60, shard="ab")
    stranger = put(tmp_path, "ac", "README", 50, now - 99_999, shard="ab")
    report = collect(tmp_path, max_bytes=0)
    assert not stale.exists()
    assert young.exists()
    assert stranger.exists()
    assert report.removed_tmp == 1


def test_negative_limit_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        collect(tmp_path, max_bytes=-1)


def test_missing_cache_root_is_an_empty_cache(tmp_path: Path) -> None:
    assert collect(tmp_path / "absent", max_bytes=0).remaining_bytes == 0


def test_gc_then_lookup_is_a_clean_miss(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    tree = tmp_path / "out"
    tree.mkdir()
    (tree / "a").write_bytes(b"a" * 1000)
    (tree / "b").write_bytes(b"b" * 1000)
    key = "3" * 64
    cache.store(key, tree, {})
    ac = cache.ac_path(key)
    # Age the entry but not one of its blobs: gc takes the entry, leaves a blob.
    os.utime(ac, (1_000, 1_000))
    collect(tmp_path / "cache", max_bytes=1500)
    assert not ac.exists()
    assert cache.lookup(key) is None


# Stores, looks up and restores a small rotating set of targets for a while,
# counting what the cache said; any exception other than CacheError kills it.
_BUILDER = """
import os, random, shutil, sys, time
from pathlib import Path
from rules.cache import CacheError, LocalCache
cache, work = LocalCache(Path(sys.argv[1])), Path(sys.argv[2])
hits = misses = 0
errors = []
deadline = time.monotonic() + float(sys.argv[3])
n = 0
while time.monotonic() < deadline:
    n += 1
    # Random, not round-robin: cycling through more keys than fit is LRU's worst case.
    key = f"{random.randrange(8):064x}"
    try:
        result = cache.lookup(key)
        if result is None:
            misses += 1
            tree = work / f"build{n}"
            for i in range(6):
                (tree / "v").mkdir(parents=True, exist_ok=True)
                (tree / "v" / f"f{i}").write_bytes(os.urandom(20_000))
            cache.store(key, tree, {"n": n})
            shutil.rmtree(tree)
        else:
            dest = work / f"restore{n}"
            cache.materialize(key, result, dest)
            shutil.rmtree(dest)
            hits += 1
    except CacheError as error:
        errors.append(type(error).__name__)
print(hits, misses, *sorted(set(errors)), flush=True)
"""


def test_gc_runs_beside_concurrent_stores_and_restores(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    work = tmp_path / "work"
    work.mkdir()
    builder = subprocess.Popen(
        [sys.executable, "-c", _BUILDER, str(root), str(work), "2.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    runs = 0
    while builder.poll() is None:
        try:
            collect(root, max_bytes=500_000)
        except CacheError as error:  # pragma: no cover - the assertion below explains
            pytest.fail(f"gc failed beside a live build: {error}")
        runs += 1
        time.sleep(0.01)
    out, err = builder.communicate()
    assert builder.returncode == 0, err.decode()
    hits, misses, *errors = out.decode().split()
    assert runs > 10
    assert int(hits) > 0 and int(misses) > 0
    # Losing a blob to gc between lookup and restore is the only expected failure.
    assert set(errors) <= {"CacheMiss"}, errors
    # Every entry left behind is complete: gc never leaves one pointing at nothing
    # for lookup to trust.
    cache = LocalCache(root)
    for ac in (root / "ac").glob("*/*"):
        result = cache.lookup(ac.name) if not ac.name.startswith(TMP_PREFIX) else None
        if result is not None:
            cache.materialize(ac.name, result, tmp_path / f"final-{ac.name}")
