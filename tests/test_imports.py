"""Tests for rules.analysis.imports: the first-party closure of model code and its parse cache."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from workspace_helpers import write

from rules.analysis.imports import ImportScanner
from rules.core.digests import DigestCache
from rules.core.hashing import sha256_file


def _scanner(root: Path) -> ImportScanner:
    state = root / ".state"
    return ImportScanner(root, DigestCache(state / "digests.json"), state / "imports.json")


def _closure_paths(root: Path, *modules: str) -> list[str]:
    return [path for path, _ in _scanner(root).closure(list(modules)).files]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """models/{a,common,other} with every import form the scanner must follow."""
    root = tmp_path / "ws"
    write(root, "models/__init__.py", "")
    write(root, "models/a/__init__.py", "from . import registry\n")
    write(root, "models/a/registry.py", "import json\nREGISTRY = {}\n")
    write(
        root,
        "models/a/model.py",
        """\
        from __future__ import annotations

        import os

        import numpy as np
        from models.common import layers
        from . import blocks
        from ..common.losses import focal


        def build():
            import yaml
            from models.lazy import helper
            return np, layers, blocks, focal, yaml, helper
        """,
    )
    write(root, "models/a/blocks.py", "import models.deep.x.y\nfrom .registry import REGISTRY\n")
    write(root, "models/common/__init__.py", "")
    write(root, "models/common/layers.py", "from google.protobuf import message\n")
    write(root, "models/common/losses.py", "def focal():\n    return 0\n")
    write(root, "models/lazy.py", "from models.common import *\n")
    write(root, "models/helper_only.py", "")
    write(root, "models/deep/__init__.py", "")
    write(root, "models/deep/x/__init__.py", "")
    write(root, "models/deep/x/y.py", "import scipy.linalg\n")
    write(root, "models/other.py", "import pandas\n")
    write(root, "standalone.py", "import models.other\n")
    return root


def test_closure_follows_every_first_party_import_form(ws: Path) -> None:
    closure = _scanner(ws).closure(["models.a.model"])
    assert [path for path, _ in closure.files] == [
        "models/__init__.py",
        "models/a/__init__.py",
        "models/a/blocks.py",
        "models/a/model.py",
        "models/a/registry.py",
        "models/common/__init__.py",
        "models/common/layers.py",
        "models/common/losses.py",
        "models/deep/__init__.py",
        "models/deep/x/__init__.py",
        "models/deep/x/y.py",
        "models/lazy.py",
    ]
    assert dict(closure.files)["models/a/model.py"] == sha256_file(ws / "models/a/model.py")


def test_third_party_top_levels_are_collected_and_stdlib_is_not(ws: Path) -> None:
    closure = _scanner(ws).closure(["models.a.model"])
    assert closure.third_party == ("google", "numpy", "scipy", "yaml")


def test_unrelated_modules_stay_out(ws: Path) -> None:
    paths = _closure_paths(ws, "models.a.model")
    assert "models/other.py" not in paths and "standalone.py" not in paths
    assert "models/helper_only.py" not in paths


def test_closure_of_several_modules_is_their_union(ws: Path) -> None:
    closure = _scanner(ws).closure(["standalone", "models.common.losses"])
    assert [path for path, _ in closure.files] == [
        "models/__init__.py",
        "models/common/__init__.py",
        "models/common/losses.py",
        "models/other.py",
        "standalone.py",
    ]
    assert closure.third_party == ("pandas",)


def test_relative_import_from_a_package_init(tmp_path: Path) -> None:
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/sub/__init__.py", "from .impl import f\nfrom .. import shared\n")
    write(tmp_path, "pkg/sub/impl.py", "")
    write(tmp_path, "pkg/shared.py", "")
    assert _closure_paths(tmp_path, "pkg.sub") == [
        "pkg/__init__.py",
        "pkg/shared.py",
        "pkg/sub/__init__.py",
        "pkg/sub/impl.py",
    ]


def test_import_cycles_terminate(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "import b\n")
    write(tmp_path, "b.py", "from a import thing\n")
    assert _closure_paths(tmp_path, "a") == ["a.py", "b.py"]


def test_module_file(ws: Path) -> None:
    scanner = _scanner(ws)
    assert scanner.module_file("models.a.model") == ws / "models/a/model.py"
    assert scanner.module_file("models.a") == ws / "models/a/__init__.py"
    assert scanner.module_file("numpy") is None
    assert scanner.module_file("models.a.missing") is None
    assert scanner.module_file("models.a.model.build") is None


def test_a_module_outside_the_workspace_is_not_a_file(ws: Path) -> None:
    closure = _scanner(ws).closure(["json", "numpy.linalg", "models.nothing_here"])
    assert closure.files == (("models/__init__.py", sha256_file(ws / "models/__init__.py")),)
    assert closure.third_party == ("numpy",)


@pytest.fixture
def parse_count(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every ast.parse call the scanner makes (instrumentation, not a fake)."""
    calls: list[str] = []
    real = ast.parse

    def counting(
        source: object, filename: str = "<unknown>", *args: object, **kw: object
    ) -> object:
        calls.append(Path(filename).name)
        return real(source, filename, *args, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(ast, "parse", counting)
    return calls


def test_unchanged_files_are_not_parsed_again_by_a_fresh_scanner(
    ws: Path, parse_count: list[str]
) -> None:
    first = _scanner(ws)
    expected = first.closure(["models.a.model"])
    # Files with equal content (the empty __init__.py files) share one parse.
    assert len(parse_count) == len({digest for _, digest in expected.files})
    first.save()
    cache = json.loads((ws / ".state/imports.json").read_text())
    assert set(cache) == {digest for _, digest in expected.files}

    parse_count.clear()
    assert _scanner(ws).closure(["models.a.model"]) == expected
    assert parse_count == []

    write(ws, "models/common/losses.py", "import torch\n")
    parse_count.clear()
    changed = _scanner(ws).closure(["models.a.model"])
    assert parse_count == ["losses.py"]
    assert "torch" in changed.third_party


def test_identical_files_share_one_parse(tmp_path: Path, parse_count: list[str]) -> None:
    write(tmp_path, "a.py", "import b\nimport c\n")
    write(tmp_path, "b.py", "import numpy\n")
    write(tmp_path, "c.py", "import numpy\n")
    _scanner(tmp_path).closure(["a"])
    assert sorted(parse_count) == ["a.py", "b.py"] or sorted(parse_count) == ["a.py", "c.py"]


def test_a_corrupt_cache_file_is_ignored(ws: Path) -> None:
    state = ws / ".state"
    write(state, "imports.json", "{not json")
    assert _closure_paths(ws, "models.lazy") == [
        "models/__init__.py",
        "models/common/__init__.py",
        "models/lazy.py",
    ]


def test_save_without_changes_writes_nothing(tmp_path: Path) -> None:
    scanner = _scanner(tmp_path)
    scanner.save()
    assert not (tmp_path / ".state/imports.json").exists()


def test_a_cache_entry_of_the_wrong_shape_is_ignored(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "import numpy\n")
    write(tmp_path, ".state/imports.json", json.dumps({sha256_file(tmp_path / "a.py"): "x"}))
    assert _scanner(tmp_path).closure(["a"]).third_party == ("numpy",)


def test_a_package_shadows_a_module_of_the_same_name(tmp_path: Path) -> None:
    write(tmp_path, "m.py", "")
    write(tmp_path, "m/__init__.py", "")
    assert _closure_paths(tmp_path, "m") == ["m/__init__.py"]
