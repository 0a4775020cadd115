"""Ask why, without building: `doit explain`, `doit list` and `doit info` say what a build
would do and why; `doit -a` forces a rebuild past every cache; orphans are listed and removed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_MODELS, doit, new_workspace, summary

pytestmark = pytest.mark.e2e

HEADER = "from rules import endpoint, keras_export, keras_model, tensor_spec\n"


def _build_py(shape: int = 4, serve: str = "serve", extra: str = "") -> str:
    return HEADER + (
        'keras_model(name="m", factory="lib.model:small", weights="small.weights.h5")\n'
        f'keras_export(name="e", model=":m", endpoints=[\n'
        f'    endpoint("{serve}", inputs=[tensor_spec((None, {shape}))]),\n'
        '    endpoint("both", inputs=[tensor_spec((None, 4))]),\n'
        '])\n'
        'keras_export(name="o", model=":m", format="onnx")\n'
    ) + extra


FILES = {"lib/__init__.py": "", "lib/model.py": TINY_MODELS, "m/BUILD.py": _build_py()}
WEIGHTS = """
import sys
sys.path.insert(0, ".")
from lib.model import small
small().save_weights("m/small.weights.h5")
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = new_workspace(tmp_path_factory.mktemp("explain") / "ws", FILES)
    subprocess.run([sys.executable, "-c", WEIGHTS], cwd=root, check=True, capture_output=True)
    result = doit(root, "export")
    assert summary(result) == "2 built, 0 restored, 0 up to date, 0 failed", result.stdout
    return root


@pytest.fixture
def ws(built: Path, tmp_path: Path) -> Path:
    """A copy of the built workspace that shares its cache, for one test to change."""
    copy = tmp_path / "ws"
    subprocess.run(["cp", "-a", str(built), str(copy)], check=True)
    return copy


def _explain(ws: Path, built: Path, *args: str, cwd: Path | None = None) -> str:
    env = {"RULES_KERAS_CACHE_DIR": str(built.parent / f"{built.name}-cache"),
           "PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run([sys.executable, "-m", "doit", "-k", "explain", *args],
                            cwd=cwd or ws, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, **env})
    heavy = [line for line in result.stderr.splitlines()
             if line.startswith("import time:") and any(
                 f"| {name}" in line for name in (" tensorflow", " keras", " jax"))]
    assert heavy == [], "explain imported a backend"
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_explain_after_a_build_says_up_to_date(ws: Path, built: Path) -> None:
    out = _explain(ws, built)
    assert "//m:e: up to date" in out and "//m:o: up to date" in out
    assert "2 up to date, 0 would restore, 0 would build, 0 cannot be built" in out


def test_explain_names_attribute_changes_structurally(ws: Path, built: Path) -> None:
    manifest = ws / "artifacts/m/e.manifest.json"
    before = manifest.read_bytes()
    (ws / "m/BUILD.py").write_text(_build_py(shape=8, serve="serve2"))
    out = _explain(ws, built, "//m:e")
    assert "//m:e: would build" in out
    assert "attribute endpoint 'serve' removed, 'serve2' added" in out
    assert manifest.read_bytes() == before  # explain built nothing


def test_explain_finds_a_renamed_target_in_the_cache_and_lists_orphans(
    ws: Path, built: Path
) -> None:
    (ws / "m/BUILD.py").write_text(_build_py().replace('name="o"', 'name="onnx"'))
    out = _explain(ws, built)
    assert "//m:onnx: would restore from the local cache" in out
    assert "artifacts/m/o.onnx\n" in out and "artifacts/m/o.onnx.manifest.json" in out
    assert "`doit clean_orphans` removes them" in out
    removed = doit(ws, "clean_orphans")
    assert "removed artifacts/m/o.onnx" in removed.stdout
    assert not (ws / "artifacts/m/o.onnx").exists()
    assert (ws / "artifacts/m/e").is_dir()


def test_explain_and_list_show_a_broken_targets_error(ws: Path, built: Path) -> None:
    (ws / "m/BUILD.py").write_text(_build_py(extra='keras_export(name="bad", model=":nope")\n'))
    out = _explain(ws, built)
    assert "//m:bad: cannot be built:" in out
    assert "no target 'nope' in package 'm'" in out
    listed = doit(ws, "list")
    line = next(x for x in listed.stdout.splitlines() if x.startswith("//m:bad"))
    assert "no target 'nope' in package 'm'" in line


def test_relative_labels_from_a_subfolder_and_unknown_ones(ws: Path, built: Path) -> None:
    out = _explain(ws, built, ":e", cwd=ws / "m")
    assert "//m:e: up to date" in out and "//m:o" not in out
    result = subprocess.run([sys.executable, "-m", "doit", "-k", "explain", ":ee"], cwd=ws / "m",
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "no target matches ':ee' (//m:ee). Did you mean '//m:e'" in result.stdout


def test_info_shows_the_target_and_its_state_never_a_repr(ws: Path, built: Path) -> None:
    (ws / "m/BUILD.py").write_text(_build_py(shape=8))
    info = doit(ws, "info", "//m:e")
    out = info.stdout
    assert "<bound method" not in out and "object at 0x" not in out
    assert "'label': '//m:e'" in out and "'kind': 'keras_export'" in out
    assert "'output': 'artifacts/m/e'" in out and "m/small.weights.h5" in out
    assert "attribute endpoints[0].inputs[0].shape: (None, 4) -> (None, 8)" in out


def test_doit_a_rebuilds_past_the_caches_and_says_so(ws: Path, built: Path) -> None:
    forced = doit(ws, "-a", "//m:o")
    assert summary(forced) == "1 built, 0 restored, 0 up to date, 0 failed", forced.stdout
    assert "] built //m:o (forced, " in forced.stdout
    assert "up to date (built by a concurrent build)" not in forced.stdout
    everything = doit(ws, "-a", "export")
    assert summary(everything) == "2 built, 0 restored, 0 up to date, 0 failed"
