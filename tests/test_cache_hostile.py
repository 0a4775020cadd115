"""The cache tiers against a hostile HTTP cache process: every lie is a miss and one warning."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_server import MODES, running_hostile

from rules.cache.local import LocalCache
from rules.cache.remote_config import RemoteConfig
from rules.cache.tiers import Corrupt, Hit, TieredCache
from rules.cache.validate import Question
from rules.core.formats import Expected

KEY = "1" * 64
OTHER = "2" * 64
SAVED_MODEL = Expected("directory", ("saved_model.pb",))
# What fetch() gives for each mode: a hit, a refused entry, or a plain miss
# (the transfer failed; the remote is not to be trusted for this build).
EXPECTED: dict[str, type | None] = {
    "honest": Hit,
    "poison": Corrupt,
    "empty-200": Corrupt,
    "swapped digest": Corrupt,
    "renamed path": Corrupt,
    "dropped file": Corrupt,
    "drip": None,
    "oversized claim": Corrupt,
    "long blob": None,
    "500": None,
    "reset": None,
    "truncated": None,
    "garbage": Corrupt,
}


def _saved_model(root: Path, seed: int) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(bytes([seed]) * 3000)
    (root / "variables/variables.index").write_bytes(bytes([seed + 1]) * 200)
    (root / "variables/variables.data-00000-of-00001").write_bytes(bytes([seed + 2]) * 5000)
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local cache with two SavedModel entries: what the hostile server serves."""
    base = tmp_path_factory.mktemp("served")
    cache = LocalCache(base / "cache")
    cache.store(KEY, _saved_model(base / "a", 1), {}, "//m:a")
    cache.store(OTHER, _saved_model(base / "b", 7), {}, "//m:b")
    return cache.root


@pytest.fixture
def tiers(tmp_path: Path) -> Iterator[tuple[TieredCache, list[str]]]:
    warnings: list[str] = []
    yield TieredCache(LocalCache(tmp_path / "local"), None, warnings.append), warnings


def test_every_mode_is_covered() -> None:
    assert set(EXPECTED) == set(MODES)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_hostile_remote_is_never_restored_nor_kept(
    mode: str, served: Path, tmp_path: Path
) -> None:
    warnings: list[str] = []
    local = LocalCache(tmp_path / "local")
    with running_hostile(served, mode) as url:
        config = RemoteConfig(url, timeout=1.0, max_blob_size=1 << 30)
        cache = TieredCache(local, config, warnings.append)
        started = time.monotonic()
        found = cache.fetch(Question(KEY, "//m:a", SAVED_MODEL))
        elapsed = time.monotonic() - started
        cache.close()
    want = EXPECTED[mode]
    assert (type(found) if found is not None else None) is want, (mode, found, warnings)
    # drip: 2 x remote_timeout, not one second per byte of the entry.
    assert elapsed < 5, f"{mode} took {elapsed:.1f}s"
    if want is Hit:
        assert warnings == []
        assert local.lookup(KEY) is not None
        return
    assert len(warnings) == 1, warnings
    assert not local.ac_path(KEY).exists(), "a refused entry must never be kept"
    assert not list((tmp_path / "local").rglob(".tmp-*")), "no partial download may stay"
    if want is Corrupt:
        assert url.removesuffix("/cache") in warnings[0] and "//m:a" in warnings[0]


def test_oversized_claim_is_refused_before_any_blob_is_requested(
    served: Path, tmp_path: Path
) -> None:
    warnings: list[str] = []
    log = tmp_path / "server.log"
    with running_hostile(served, "oversized claim", log) as url:
        cache = TieredCache(LocalCache(tmp_path / "local"), RemoteConfig(url), warnings.append)
        found = cache.fetch(Question(KEY, "//m:a", SAVED_MODEL))
        cache.close()
    assert isinstance(found, Corrupt)
    assert "above remote_max_blob_size (8.0G)" in warnings[0]
    assert "/cas/" not in log.read_text()


def test_a_dripping_server_is_cut_at_its_deadline_and_not_asked_again(
    served: Path, tmp_path: Path
) -> None:
    warnings: list[str] = []
    with running_hostile(served, "drip") as url:
        cache = TieredCache(LocalCache(tmp_path / "local"), RemoteConfig(url, timeout=1.0),
                            warnings.append)
        started = time.monotonic()
        assert cache.fetch(Question(KEY, "//m:a", SAVED_MODEL)) is None
        assert cache.fetch(Question(OTHER, "//m:b", SAVED_MODEL)) is None
        elapsed = time.monotonic() - started
        cache.close()
    assert elapsed < 4, elapsed
    assert len(warnings) == 1 and "deadline" in warnings[0], warnings
