"""Tests for rules.storage.serving: versions, pruning, models.config, on a real filesystem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rules.core.files import scan_tree
from rules.storage import serving


def _saved_model(root: Path, text: str) -> Path:
    """A stand-in SavedModel folder: serving only copies files, it never parses them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "saved_model.pb").write_text(text)
    (root / "variables").mkdir(exist_ok=True)
    (root / "variables" / "variables.index").write_text(text * 2)
    return root


def _publish(tree: Path, model: str, artifact: Path, keep: int = 3) -> serving.Served:
    files, dirs = scan_tree(artifact)
    return serving.publish(tree, model, artifact, files, dirs, f"//m:{model}", keep)


def test_same_content_keeps_its_version_and_new_content_gets_the_next(tmp_path: Path) -> None:
    tree = tmp_path / "serving"
    art = _saved_model(tmp_path / "art", "v1")
    first = _publish(tree, "mnist", art)
    assert (first.version, first.created) == (1, True)
    assert (tree / "mnist" / "1" / "variables" / "variables.index").read_text() == "v1v1"
    again = _publish(tree, "mnist", art)
    assert (again.version, again.created) == (1, False)
    _saved_model(art, "v2")
    second = _publish(tree, "mnist", art)
    assert (second.version, second.created) == (2, True)
    assert serving.versions(tree / "mnist") == [1, 2]
    assert (tree / "mnist" / "2" / "saved_model.pb").read_text() == "v2"
    assert (tree / "mnist" / "1" / "saved_model.pb").read_text() == "v1"


def test_reverting_content_is_still_a_new_version(tmp_path: Path) -> None:
    """TF Serving serves the highest number, so going back means going up."""
    tree = tmp_path / "serving"
    art = _saved_model(tmp_path / "art", "a")
    _publish(tree, "m", art)
    _publish(tree, "m", _saved_model(art, "b"))
    assert _publish(tree, "m", _saved_model(art, "a")).version == 3


def test_only_the_newest_versions_are_kept_and_numbers_keep_growing(tmp_path: Path) -> None:
    tree = tmp_path / "serving"
    art = tmp_path / "art"
    for i in range(5):
        _publish(tree, "m", _saved_model(art, f"v{i}"), keep=2)
    assert serving.versions(tree / "m") == [4, 5]
    assert [p.name for p in (tree / "m").iterdir() if p.name.startswith(".old")] == []


def test_is_current_needs_the_newest_version_on_disk(tmp_path: Path) -> None:
    tree = tmp_path / "serving"
    art = _saved_model(tmp_path / "art", "x")
    files, _ = scan_tree(art)
    digest = serving.content_digest(files)
    assert not serving.is_current(tree, "m", digest)
    _publish(tree, "m", art)
    assert serving.is_current(tree, "m", digest)
    # A version copied in by hand is newer than what rules_keras published.
    (tree / "m" / "7").mkdir()
    assert not serving.is_current(tree, "m", digest)
    assert _publish(tree, "m", art).version == 8


def test_models_config_lists_every_served_model(tmp_path: Path) -> None:
    tree = tmp_path / "serving"
    _publish(tree, "ranker", _saved_model(tmp_path / "a", "r"))
    _publish(tree, "mnist", _saved_model(tmp_path / "b", "m"))
    (tree / "not_a_model").mkdir()
    (tree / "notes.txt").write_text("TF Serving ignores files")
    text = (tree / serving.CONFIG).read_text()
    assert text == (
        "model_config_list {\n"
        "  config {\n"
        '    name: "mnist"\n'
        f'    base_path: "{(tree / "mnist").resolve()}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        "  config {\n"
        '    name: "ranker"\n'
        f'    base_path: "{(tree / "ranker").resolve()}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        "}\n"
    )


def test_unchanged_config_is_not_rewritten(tmp_path: Path) -> None:
    """A server polling models.config must not see it replaced for nothing."""
    tree = tmp_path / "serving"
    art = _saved_model(tmp_path / "art", "x")
    _publish(tree, "m", art)
    before = os.stat(tree / serving.CONFIG).st_ino
    _publish(tree, "m", art)
    assert os.stat(tree / serving.CONFIG).st_ino == before


def test_staging_left_by_a_dead_process_is_removed_and_never_a_version(tmp_path: Path) -> None:
    tree = tmp_path / "serving"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    leftover = tree / "m" / f".staging-{dead.stdout.strip()}-abcd1234"
    _saved_model(leftover, "half")
    assert serving.versions(tree / "m") == []
    assert serving.served_models(tree) == []
    _publish(tree, "m", _saved_model(tmp_path / "art", "x"))
    assert not leftover.exists()
    assert serving.served_models(tree) == ["m"]
