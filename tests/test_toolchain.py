"""Tests for rules.core.toolchain: versions from metadata and the cached module map."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
from pathlib import Path

import pytest

from rules.core import toolchain
from rules.core.backends import BACKENDS
from rules.core.toolchain import TOOLCHAIN_DISTS, Toolchain, detect


def _installed(dists: tuple[str, ...]) -> str | None:
    for dist in dists:
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def test_detect_reads_versions_from_installed_metadata(tmp_path: Path) -> None:
    found = detect(tmp_path / "toolchain.json")
    assert found.python == f"{platform.python_implementation()} {platform.python_version()}"
    assert [m for m, _ in found.modules] == list(TOOLCHAIN_DISTS)
    for module, dists in TOOLCHAIN_DISTS.items():
        assert found.version(module) == _installed(dists), module


def test_detect_sees_keras_when_installed(tmp_path: Path) -> None:
    try:
        version = importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("keras is not installed in this environment")
    assert detect(tmp_path / "t.json").version("keras") == f"keras=={version}"


def test_detect_without_a_cache_path_gives_the_same_toolchain(tmp_path: Path) -> None:
    assert detect(None) == detect(tmp_path / "t.json")
    assert not (tmp_path / "other.json").exists()


def test_the_module_map_is_cached_against_sys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "toolchain.json"
    first = detect(cache)
    saved = json.loads(cache.read_text())
    assert set(saved) == {"stamp", "mapping", "versions"}
    assert saved["versions"]["numpy"] == importlib.metadata.version("numpy")

    def refuse(*args: object) -> object:
        raise AssertionError("installed metadata read despite a valid cache")

    # A no-op build reads versions from the cache, never from METADATA files.
    for name in ("packages_distributions", "distributions", "version"):
        monkeypatch.setattr(importlib.metadata, name, refuse)
    toolchain._VERSIONS.clear()
    toolchain._COMPLETE[0] = False
    assert detect(cache) == first
    assert first.third_party(["numpy"]) == {"numpy": saved["versions"]["numpy"]}


def test_a_stale_or_corrupt_cache_is_recomputed(tmp_path: Path) -> None:
    cache = tmp_path / "toolchain.json"
    first = detect(cache)
    saved = json.loads(cache.read_text())
    saved["stamp"] = [["/nowhere", 1]]
    saved["mapping"] = {"numpy": ["not-numpy"]}
    cache.write_text(json.dumps(saved))
    assert detect(cache) == first
    cache.write_text("{broken")
    assert detect(cache) == first


def test_third_party_maps_top_level_modules_to_distribution_versions(tmp_path: Path) -> None:
    found = detect(tmp_path / "t.json")
    numpy_version = importlib.metadata.version("numpy")
    assert found.third_party(["numpy"]) == {"numpy": numpy_version}
    assert found.third_party(["os", "no_such_module_anywhere"]) == {}
    assert found.third_party([]) == {}


def test_third_party_uses_the_distribution_name_not_the_module_name() -> None:
    chain = Toolchain(
        "CPython 3.11.0",
        (),
        (("np_alias", ("numpy",)), ("ghost", ("not-an-installed-dist",))),
    )
    assert chain.third_party(["np_alias", "ghost"]) == {
        "numpy": importlib.metadata.version("numpy")
    }


def test_to_json_and_version() -> None:
    chain = Toolchain(
        "CPython 3.11.0",
        (("keras", "keras==3.10.0"), ("jax", None)),
        (),
    )
    assert chain.to_json() == {"python": "CPython 3.11.0", "keras": "keras==3.10.0", "jax": None}
    assert chain.version("keras") == "keras==3.10.0"
    assert chain.version("jax") is None and chain.version("torch") is None


def test_missing_for_lists_uninstalled_backend_modules() -> None:
    chain = Toolchain("CPython 3.11.0", (), ())
    for backend, info in BACKENDS.items():
        expected = [m for m in info.modules if importlib.util.find_spec(m) is None]
        assert chain.missing_for(backend) == expected
    assert "tensorflow" in BACKENDS["jax"].modules


def test_a_cache_with_a_wrong_shaped_mapping_is_recomputed(tmp_path: Path) -> None:
    cache = tmp_path / "toolchain.json"
    first = detect(cache)
    saved = json.loads(cache.read_text())
    saved["mapping"] = ["numpy"]
    cache.write_text(json.dumps(saved))
    assert detect(cache) == first


def test_numerics_env_enters_the_toolchain_only_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in toolchain.NUMERICS_ENV:
        monkeypatch.delenv(name, raising=False)
    plain = detect(tmp_path / "t.json")
    assert not set(plain.to_json()) & set(toolchain.NUMERICS_ENV)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    changed = detect(tmp_path / "t.json")
    assert changed.to_json() == {**plain.to_json(), "TF_ENABLE_ONEDNN_OPTS": "0"}
