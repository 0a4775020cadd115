"""Tests for rules.storage.manifest: the JSON beside each artifact and the intact() check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from workspace_helpers import OLD, age, write

from rules.core.digests import DigestCache
from rules.core.files import scan_tree
from rules.storage import manifest as manifest_io
from rules.storage.manifest import Manifest, cold, intact, manifest_path


def _artifact_dir(root: Path) -> Path:
    artifact = root / "artifacts" / "m" / "serve"
    write(artifact, "saved_model.pb", b"\x08\x01" * 100)
    write(artifact, "variables/variables.index", "index")
    write(artifact, "variables/variables.data-00000-of-00001", b"\x00" * 5000)
    (artifact / "assets").mkdir()
    return artifact


def _manifest(artifact: Path, **overrides: Any) -> Manifest:
    files, dirs = scan_tree(artifact)
    values: dict[str, Any] = {
        "label": "//m:serve",
        "kind": "keras_export",
        "key": "a" * 64,
        "inputs": {"files": {"m/w.weights.h5": "b" * 64}, "attrs": {"tolerance": 1e-5}},
        "artifact_kind": "directory" if artifact.is_dir() else "file",
        "files": files,
        "dirs": dirs,
        "record": {"endpoints": [{"name": "serve", "max_abs_diff": 0.0, "ok": True}]},
        "outcome": "built",
    }
    values.update(overrides)
    return Manifest(**values)


def test_manifest_path_is_a_sibling() -> None:
    assert manifest_path(Path("/a/artifacts/m/serve")) == Path("/a/artifacts/m/serve.manifest.json")
    assert manifest_path(Path("x/w.weights.h5")) == Path("x/w.weights.h5.manifest.json")


def test_write_read_round_trip(tmp_path: Path) -> None:
    artifact = _artifact_dir(tmp_path)
    manifest = _manifest(artifact)
    manifest_io.write(artifact, manifest)
    assert manifest_io.read(artifact) == manifest
    data = json.loads(manifest_path(artifact).read_text())
    first = manifest.files[0]
    assert data["files"][0] == ["saved_model.pb", first.sha256, 200, first.mode]
    assert data["dirs"] == ["assets"]


def test_round_trip_of_a_file_artifact(tmp_path: Path) -> None:
    artifact = write(tmp_path, "artifacts/m/w.weights.h5", b"weights")
    manifest = _manifest(artifact, kind="keras_train", outcome="restored")
    manifest_io.write(artifact, manifest)
    assert manifest_io.read(artifact) == manifest
    assert manifest.files[0].path == "w.weights.h5"


def test_missing_outcome_defaults_to_built(tmp_path: Path) -> None:
    data = _manifest(_artifact_dir(tmp_path)).to_json()
    del data["outcome"]
    parsed = Manifest.from_json(data)
    assert parsed is not None and parsed.outcome == "built"


def test_missing_manifest_reads_as_none(tmp_path: Path) -> None:
    assert manifest_io.read(tmp_path / "nothing") is None


def _mutations() -> list[tuple[str, Any]]:
    return [
        ("drop label", lambda d: d.pop("label")),
        ("drop files", lambda d: d.pop("files")),
        ("files not a list of lists", lambda d: d.update(files=[5])),
        ("short file entry", lambda d: d.update(files=[["a", "b" * 64]])),
        ("bad sha", lambda d: d.update(files=[["a", "XYZ", 1, 0o644]])),
        ("unsafe path", lambda d: d.update(files=[["../a", "b" * 64, 1, 0o644]])),
        ("negative size", lambda d: d.update(files=[["a", "b" * 64, -1, 0o644]])),
        ("dirs not a list", lambda d: d.update(dirs=5)),
    ]


@pytest.mark.parametrize(("what", "mutate"), _mutations(), ids=[m[0] for m in _mutations()])
def test_malformed_manifest_reads_as_none(tmp_path: Path, what: str, mutate: Any) -> None:
    artifact = _artifact_dir(tmp_path)
    data = _manifest(artifact).to_json()
    mutate(data)
    write(tmp_path, manifest_path(artifact).relative_to(tmp_path).as_posix(), json.dumps(data))
    assert manifest_io.read(artifact) is None, what


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '"text"', "42"])
def test_unparseable_manifest_reads_as_none(tmp_path: Path, text: str) -> None:
    artifact = tmp_path / "a"
    manifest_path(artifact).write_text(text)
    assert manifest_io.read(artifact) is None


def test_non_object_inputs_read_as_none(tmp_path: Path) -> None:
    data = _manifest(_artifact_dir(tmp_path)).to_json()
    data["inputs"] = 5
    assert Manifest.from_json(data) is None


@pytest.fixture
def cache(tmp_path: Path) -> DigestCache:
    return DigestCache(tmp_path / "digests.json")


def test_intact_when_untouched(tmp_path: Path, cache: DigestCache) -> None:
    artifact = _artifact_dir(tmp_path)
    assert intact(artifact, _manifest(artifact), cache)


def test_intact_detects_a_deleted_file(tmp_path: Path, cache: DigestCache) -> None:
    artifact = _artifact_dir(tmp_path)
    manifest = _manifest(artifact)
    (artifact / "variables" / "variables.index").unlink()
    assert not intact(artifact, manifest, cache)


def test_intact_detects_a_deleted_artifact(tmp_path: Path, cache: DigestCache) -> None:
    artifact = _artifact_dir(tmp_path)
    manifest = _manifest(artifact)
    for path in sorted(artifact.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    artifact.rmdir()
    assert not intact(artifact, manifest, cache)


def test_intact_detects_a_modified_file_of_the_same_size(
    tmp_path: Path, cache: DigestCache
) -> None:
    artifact = _artifact_dir(tmp_path)
    for path in artifact.rglob("*"):
        age(path)
    manifest = _manifest(artifact)
    assert intact(artifact, manifest, cache)
    target = artifact / "saved_model.pb"
    data = bytearray(target.read_bytes())
    data[7] ^= 0xFF
    target.write_bytes(bytes(data))
    age(target, OLD + 10)
    assert not intact(artifact, manifest, cache)


def test_intact_detects_a_truncated_file(tmp_path: Path, cache: DigestCache) -> None:
    artifact = _artifact_dir(tmp_path)
    manifest = _manifest(artifact)
    (artifact / "variables" / "variables.data-00000-of-00001").write_bytes(b"\x00" * 10)
    assert not intact(artifact, manifest, cache)


def test_intact_for_a_file_artifact(tmp_path: Path, cache: DigestCache) -> None:
    artifact = write(tmp_path, "w.weights.h5", b"weights")
    manifest = _manifest(artifact)
    assert intact(artifact, manifest, cache)
    artifact.write_bytes(b"WEIGHTS")
    assert not intact(artifact, manifest, cache)


def test_a_cold_build_counts_missing_manifests_and_other_toolchains(tmp_path: Path) -> None:
    # After a Keras upgrade every manifest records the old versions: all of them are cold.
    now = {"python": "CPython 3.11.7", "keras": "keras==3.15.1"}
    old = {**now, "keras": "keras==3.14.0"}
    built = _artifact_dir(tmp_path)
    for name, toolchain in (("a", now), ("b", old)):
        manifest_io.write(tmp_path / name, _manifest(built, inputs={"toolchain": toolchain}))
    manifest_path(tmp_path / "c").write_text("not json")
    artifacts = [tmp_path / n for n in ("a", "b", "c", "never")]
    assert cold(artifacts, now) == 3
    assert cold(artifacts[:1], now) == 0
