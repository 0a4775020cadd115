"""A no-op sees every change to an input or an output, even one that keeps size and mtime.

Tools that preserve mtimes (cp -p, rsync -a, tar, checkpoint sync) can put
different bytes behind the same (size, mtime); the stat cache also keys on
the ctime and the inode, which nobody can set back, as git and Bazel do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_MODELS, doit, new_workspace, summary

pytestmark = pytest.mark.e2e

HEADER = "from rules import keras_export, keras_model\n"
FILES = {
    "lib/__init__.py": "",
    "lib/model.py": TINY_MODELS,
    "m/BUILD.py": HEADER + (
        'keras_model(name="m", factory="lib.model:small", weights="small.weights.h5")\n'
        'keras_export(name="e", model=":m", serving="tiny")\n'
        'keras_export(name="o", model=":m", format="onnx")\n'
    ),
    "pyproject.toml": '[tool.rules_keras]\nserving_root = "serving"\n',
}
WEIGHTS = """
import sys
sys.path.insert(0, ".")
from lib.model import small
small().save_weights("m/small.weights.h5")
"""


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = new_workspace(tmp_path / "ws", FILES)
    subprocess.run([sys.executable, "-c", WEIGHTS], cwd=root, check=True, capture_output=True)
    first = doit(root, "export")
    assert summary(first) == "2 built, 0 restored, 0 up to date, 0 failed", first.stdout
    noop = doit(root, "export")
    assert summary(noop) == "0 built, 0 restored, 2 up to date, 0 failed", noop.stdout
    return root


def _flip_keeping_size_and_mtime(path: Path, offset: int = -40) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    with open(path, "r+b") as handle:  # in place: same inode
        handle.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns,
                                                               st.st_ino)


def test_an_input_flipped_in_place_with_its_mtime_kept_rebuilds(ws: Path) -> None:
    _flip_keeping_size_and_mtime(ws / "m/small.weights.h5")
    result = doit(ws, "-v", "2", "export")
    assert summary(result) == "2 built, 0 restored, 0 up to date, 0 failed", result.stdout
    assert "m/small.weights.h5:" in result.stdout  # the reason names the changed input


@pytest.mark.parametrize("output", ["artifacts/m/e/variables/variables.data-00000-of-00001",
                                    "artifacts/m/o.onnx"])
def test_an_output_flipped_in_place_with_its_mtime_kept_is_replaced(ws: Path, output: str) -> None:
    path = ws / output
    original = path.read_bytes()
    _flip_keeping_size_and_mtime(path)
    result = doit(ws, "export")
    assert summary(result) == "0 built, 1 restored, 1 up to date, 0 failed", result.stdout
    assert path.read_bytes() == original


def test_an_extra_file_in_a_saved_model_folder_is_a_change(ws: Path) -> None:
    extra = ws / "artifacts/m/e/variables/evil.txt"
    extra.write_text("not part of the artifact")
    result = doit(ws, "export")
    assert summary(result) == "0 built, 1 restored, 1 up to date, 0 failed", result.stdout
    assert not extra.exists()


def test_a_damaged_tf_serving_copy_is_republished_as_a_new_version(ws: Path) -> None:
    version = ws / "serving/tiny/1"
    assert version.is_dir()
    _flip_keeping_size_and_mtime(version / "variables/variables.data-00000-of-00001")
    result = doit(ws, "-v", "2", "export")
    assert summary(result) == "0 built, 0 restored, 2 up to date, 0 failed", result.stdout
    assert "up to date; publishing it to TF Serving" in result.stdout
    newest = ws / "serving/tiny/2/variables/variables.data-00000-of-00001"
    assert newest.read_bytes() == (ws / "artifacts/m/e/variables/"
                                   "variables.data-00000-of-00001").read_bytes()
    again = doit(ws, "export")
    assert summary(again) == "0 built, 0 restored, 2 up to date, 0 failed", again.stdout
