"""Labels as Bazel users type them, on the real `doit`: a subtree, a package, relative labels
from a subfolder (with `doit -k`), and an unknown label that gets the closest ones."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_MODELS, doit, new_workspace, summary

pytestmark = pytest.mark.e2e

HEADER = "from rules import keras_export, keras_model, keras_train\n"
MODEL = HEADER + 'keras_model(name="m", factory="lib.model:small", weights="//lib:w")\n'
FILES = {
    "lib/__init__.py": "",
    "lib/model.py": TINY_MODELS + "\n\ndef fit(model):\n    return None\n",
    "lib/BUILD.py": HEADER + 'keras_train(name="w", factory="lib.model:small", '
                             'train="lib.model:fit")\n',
    "models/vision/a/BUILD.py": MODEL + 'keras_export(name="e", model=":m")\n'
                                        'keras_export(name="e2", model=":m")\n',
    "models/vision/b/BUILD.py": MODEL + 'keras_export(name="e", model=":m")\n',
    "models/text/BUILD.py": MODEL + 'keras_export(name="e", model=":m")\n',
}
LINE = re.compile(r"^\[ *\d+/\d+\] (?:up to date|\w+) (//\S+)", re.M)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once; each test then selects targets, which are up to date (no TensorFlow)."""
    root = new_workspace(tmp_path_factory.mktemp("labels") / "ws", FILES)
    result = doit(root, "export")
    # The four exports have one action key: one is built, the others restored.
    assert summary(result) == "2 built, 3 restored, 0 up to date, 0 failed", result.stdout
    return root


def _run(ws: Path, *args: str, cwd: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RULES_KERAS_CACHE_DIR": str(ws.parent / f"{ws.name}-cache")}
    return subprocess.run([sys.executable, "-m", "doit", *args], cwd=ws / cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _selected(result: subprocess.CompletedProcess[str]) -> set[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return set(LINE.findall(result.stdout))


def test_a_subtree_and_a_package(ws: Path) -> None:
    assert _selected(_run(ws, "//models/vision/...")) == {
        "//lib:w", "//models/vision/a:e", "//models/vision/a:e2", "//models/vision/b:e"}
    assert _selected(_run(ws, "//models/vision/a:all")) == {
        "//lib:w", "//models/vision/a:e", "//models/vision/a:e2"}


def test_relative_labels_from_a_subfolder_with_doit_k(ws: Path) -> None:
    here = "models/vision/a"
    assert _selected(_run(ws, "-k", ":e", cwd=here)) == {"//lib:w", "//models/vision/a:e"}
    assert _selected(_run(ws, "-k", "e2", cwd=here)) == {"//lib:w", "//models/vision/a:e2"}
    assert _selected(_run(ws, "-k", "...", cwd="models")) == {
        "//lib:w", "//models/vision/a:e", "//models/vision/a:e2", "//models/vision/b:e",
        "//models/text:e"}
    # Without -k doit looks for dodo.py in the current folder only: its own error.
    plain = _run(ws, ":e", cwd=here)
    assert plain.returncode != 0 and "dodo" in plain.stdout + plain.stderr


def test_an_unknown_label_gets_the_closest_ones(ws: Path) -> None:
    typo = _run(ws, "//models/vison/a:e2")
    assert typo.returncode == 2
    assert "Did you mean '//models/vision/a:e2'" in typo.stderr
    assert "Invalid parameter" not in typo.stdout + typo.stderr
    relative = _run(ws, "-k", "e22", cwd="models/vision/a")
    assert relative.returncode == 2
    assert "no target 'e22' in package '//models/vision/a'" in relative.stderr
    assert "Did you mean '//models/vision/a:e2'" in relative.stderr
