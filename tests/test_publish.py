"""Tests for rules.storage.publish: atomic replacement of artifacts and their manifests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from workspace_helpers import write

from rules.core.files import scan_tree
from rules.core.fsio import TempName, discard, parse_temp
from rules.storage import manifest as manifest_io
from rules.storage import publish as publish_module
from rules.storage.manifest import Manifest
from rules.storage.publish import publish, remove, staging_dir


def _manifest(staged: Path, key: str = "a" * 64) -> Manifest:
    files, dirs = scan_tree(staged)
    return Manifest(
        label="//m:serve",
        kind="keras_export",
        key=key,
        inputs={},
        artifact_kind="directory" if staged.is_dir() else "file",
        files=files,
        dirs=dirs,
        record={},
        outcome="built",
    )


def _tree(path: Path) -> dict[str, str]:
    return {
        p.relative_to(path).as_posix(): p.read_text() if p.is_file() else "<dir>"
        for p in sorted(path.rglob("*"))
    }


def staging_path(dest: Path) -> Path:
    """Where a worker writes: dest's own name inside a fresh staging folder."""
    return staging_dir(dest) / dest.name


def _stage_dir(dest: Path, files: dict[str, str]) -> Path:
    staged = staging_path(dest)
    for rel, text in files.items():
        write(staged, rel, text)
    return staged


def _publish(dest: Path, staged: Path, manifest: Manifest) -> None:
    """Publish as the build does, then drop the staging folder publish must leave empty."""
    publish(dest, staged, manifest)
    assert list(staged.parent.iterdir()) == [], "publish left the old artifact behind"
    discard(staged.parent)


def _siblings(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir())


def test_staging_dir_is_a_fresh_hidden_sibling(tmp_path: Path) -> None:
    dest = tmp_path / "artifacts" / "m" / "serve"
    folder = staging_dir(dest)
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert folder.parent == dest.parent
    assert parse_temp(folder.name) == TempName("staging", os.getpid(), "serve")
    assert staging_dir(dest) != folder


def test_publish_a_new_directory(tmp_path: Path) -> None:
    dest = tmp_path / "artifacts" / "m" / "serve"
    staged = _stage_dir(dest, {"saved_model.pb": "v1", "variables/v.index": "i1"})
    manifest = _manifest(staged)
    _publish(dest, staged, manifest)
    assert _tree(dest) == {"saved_model.pb": "v1", "variables": "<dir>", "variables/v.index": "i1"}
    assert manifest_io.read(dest) == manifest
    assert _siblings(dest) == ["serve", "serve.manifest.json"]


def test_publish_replaces_an_old_directory_completely(tmp_path: Path) -> None:
    dest = tmp_path / "artifacts" / "m" / "serve"
    old = _stage_dir(
        dest, {"saved_model.pb": "v1", "old_only/file": "x", "variables/v.index": "i1"}
    )
    _publish(dest, old, _manifest(old, "1" * 64))
    new = _stage_dir(dest, {"saved_model.pb": "v2", "variables/v.index": "i2", "assets/a": "a"})
    manifest = _manifest(new, "2" * 64)
    _publish(dest, new, manifest)
    assert _tree(dest) == {
        "assets": "<dir>",
        "assets/a": "a",
        "saved_model.pb": "v2",
        "variables": "<dir>",
        "variables/v.index": "i2",
    }
    assert manifest_io.read(dest) == manifest
    assert _siblings(dest) == ["serve", "serve.manifest.json"]
    assert not old.exists() and not new.exists()


def test_publish_without_rename_exchange_moves_the_old_directory_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulates a platform without renameat2(RENAME_EXCHANGE), e.g. macOS or old kernels.
    monkeypatch.setattr(publish_module, "_exchange", lambda a, b: False)
    dest = tmp_path / "serve"
    old = _stage_dir(dest, {"a": "1", "only_old": "x"})
    _publish(dest, old, _manifest(old))
    new = _stage_dir(dest, {"a": "2"})
    _publish(dest, new, _manifest(new))
    assert _tree(dest) == {"a": "2"}
    assert _siblings(dest) == ["serve", "serve.manifest.json"]


def test_publish_a_single_file(tmp_path: Path) -> None:
    dest = tmp_path / "artifacts" / "m" / "w.weights.h5"
    for version in (b"first", b"second"):
        staged = staging_path(dest)
        staged.write_bytes(version)
        manifest = _manifest(staged)
        _publish(dest, staged, manifest)
        assert dest.read_bytes() == version
        assert manifest_io.read(dest) == manifest
    assert _siblings(dest) == ["w.weights.h5", "w.weights.h5.manifest.json"]


def test_a_file_replaces_an_old_directory(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    old = _stage_dir(dest, {"x": "1"})
    _publish(dest, old, _manifest(old))
    staged = staging_path(dest)
    staged.write_text("now a file")
    _publish(dest, staged, _manifest(staged))
    assert dest.is_file() and dest.read_text() == "now a file"
    assert _siblings(dest) == ["out", "out.manifest.json"]


def test_a_directory_replaces_an_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    staged = staging_path(dest)
    staged.write_text("a file")
    _publish(dest, staged, _manifest(staged))
    new = _stage_dir(dest, {"x": "1"})
    _publish(dest, new, _manifest(new))
    assert _tree(dest) == {"x": "1"}


def test_remove_deletes_the_artifact_and_its_manifest(tmp_path: Path) -> None:
    dest = tmp_path / "serve"
    staged = _stage_dir(dest, {"a/b": "1"})
    _publish(dest, staged, _manifest(staged))
    remove(dest)
    assert _siblings(dest) == []
    remove(dest)
    file_dest = tmp_path / "w.weights.h5"
    staged = staging_path(file_dest)
    staged.write_text("w")
    _publish(file_dest, staged, _manifest(staged))
    remove(file_dest)
    assert _siblings(file_dest) == []


def test_discard_files_folders_and_nothing(tmp_path: Path) -> None:
    folder = write(tmp_path, "d/e/f", "x").parent.parent
    single = write(tmp_path, "single", "x")
    discard(folder)
    discard(single)
    discard(tmp_path / "never-existed")
    assert list(tmp_path.iterdir()) == []


def test_discard_a_symlink_keeps_its_target(tmp_path: Path) -> None:
    target = write(tmp_path, "real/keep", "x").parent
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    discard(link)
    assert not link.exists() and (target / "keep").read_text() == "x"
