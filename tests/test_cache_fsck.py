"""`doit cache_check`: every bad entry and blob is reported and removed, good ones never."""

from __future__ import annotations

import threading
from pathlib import Path

from rules.cache.fsck import check
from rules.cache.local import LocalCache
from tests.conftest import doit, new_workspace

KEYS = [f"{i:x}" * 64 for i in range(1, 6)]


def _tree(root: Path, seed: int) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(bytes([seed]) * 1000)
    (root / "variables/variables.index").write_bytes(bytes([seed + 100]) * 300)
    return root


def _filled(tmp_path: Path) -> LocalCache:
    cache = LocalCache(tmp_path / "cache")
    for i, key in enumerate(KEYS):
        cache.store(key, _tree(tmp_path / f"t{i}", i), {}, f"//m:t{i}")
    return cache


def _writable(path: Path) -> Path:
    path.chmod(0o644)
    return path


def test_a_sound_cache_passes(tmp_path: Path) -> None:
    report = check(_filled(tmp_path).root)
    assert (report.entries, report.blobs, report.bad) == (5, 10, ())


def test_every_kind_of_damage_is_found_and_removed(tmp_path: Path) -> None:
    cache = _filled(tmp_path)
    entries = {key: cache.lookup(key) for key in KEYS}
    flipped = cache.cas_path(entries[KEYS[0]].files[0].sha256)  # type: ignore[union-attr]
    data = bytearray(_writable(flipped).read_bytes())
    data[10] ^= 1
    flipped.write_bytes(data)
    cache.ac_path(KEYS[1]).write_bytes(b"\xff garbage")
    cache.ac_path(KEYS[2]).write_bytes(cache.ac_path(KEYS[3]).read_bytes())
    missing = entries[KEYS[4]].files[1].sha256  # type: ignore[union-attr]
    cache.cas_path(missing).unlink()
    seen: list[str] = []
    report = check(cache.root, lambda f: seen.append(f.line()))
    problems = {Path(f.path).name: f.problem for f in report.bad}
    assert problems[flipped.name].startswith("blob is corrupt")
    assert "was corrupt" in problems[KEYS[0]]
    assert problems[KEYS[1]].startswith("entry is corrupt")
    assert "not its own key" in problems[KEYS[2]]
    assert "is missing" in problems[KEYS[4]]
    assert len(report.bad) == 5 and len(seen) == 5
    assert all(line.endswith("; removed") for line in seen)
    assert not flipped.exists()
    assert [key for key in KEYS if cache.ac_path(key).exists()] == [KEYS[3]]
    again = check(cache.root)
    assert again.bad == () and again.entries == 1


def test_checking_while_entries_are_written_removes_nothing_good(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache")
    stop = threading.Event()

    def writer() -> None:
        for i in range(40):
            cache.store(f"{i:064x}", _tree(tmp_path / f"w{i}", i), {}, f"//m:w{i}")
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    runs = 0
    while not stop.is_set() or runs == 0:
        assert check(cache.root).bad == ()
        runs += 1
    thread.join()
    assert check(cache.root).entries == 40


def test_doit_cache_check_reports_and_fails_on_damage(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path / "ws")
    cache = _filled(tmp_path)
    env = {"RULES_KERAS_CACHE_DIR": str(cache.root)}
    clean = doit(ws, "cache_check", env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "checked 5 action results and 10 blobs: 0 bad" in clean.stdout
    cache.ac_path(KEYS[1]).write_bytes(b"")
    damaged = doit(ws, "cache_check", env=env)
    assert damaged.returncode != 0
    assert f"{cache.ac_path(KEYS[1])}: entry is corrupt" in damaged.stdout
    assert "1 bad, removed" in damaged.stdout
    assert "Traceback" not in damaged.stdout + damaged.stderr
    assert doit(ws, "cache_check", env=env).returncode == 0
