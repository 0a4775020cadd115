"""The first no-op after a build hashes nothing: a build records the digests it knows.

A real `doit export` trains weights (a keras_train) and exports a SavedModel
from them; both artifacts are a few MB. Then the up-to-date check of every
target runs in this process with the hash function counting, and must read
none of the bytes that the build wrote or verified.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.build import BuildSession
from rules.core import digests as digests_module
from tests.conftest import TINY_MODELS, counts, doit, new_workspace, stop_servers
from tests.workspace_helpers import age

MODEL = TINY_MODELS + '''

def wide():
    # About 2.1M parameters: an 8.5 MB weights file and a SavedModel as large.
    inp = keras.Input((512,), name="x")
    return keras.Model(inp, keras.layers.Dense(8)(keras.layers.Dense(4096)(inp)))


def fit(model):
    return None
'''

BUILD = '''
from rules import keras_export, keras_model, keras_train

keras_train(name="w", factory="lib.model:wide", train="lib.model:fit")
keras_model(name="m", factory="lib.model:wide", weights=":w")
keras_export(name="e", model=":m")
'''


def test_the_first_no_op_after_a_build_hashes_no_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = new_workspace(tmp_path / "ws", {
        "lib/__init__.py": "", "lib/model.py": MODEL, "p/BUILD.py": BUILD,
    })
    # Sources the user wrote long ago, as in real life; only what the build
    # itself writes is new (and would be "racy" to a stat-keyed cache).
    for path in ws.rglob("*"):
        if path.is_file():
            age(path)
    try:
        built = doit(ws, "export")
        assert counts(built) == {"built": 2, "restored": 0, "up to date": 0, "failed": 0}, (
            built.stdout + built.stderr)
    finally:
        stop_servers()

    hashed: list[tuple[str, int]] = []
    real = digests_module.sha256_file

    def counting(path: Path) -> str:
        hashed.append((str(path), path.stat().st_size))
        return real(path)

    monkeypatch.setattr(digests_module, "sha256_file", counting)
    monkeypatch.setenv("RULES_KERAS_CACHE_DIR", str(ws.parent / f"{ws.name}-cache"))
    session = BuildSession(ws)
    try:
        checks = {str(action.label): session.check(action.label)
                  for action in session.graph.actions}
    finally:
        session.close()
    assert {label: check.up_to_date for label, check in checks.items()} == {
        "//p:w": True, "//p:e": True}
    assert hashed == [], f"the first no-op re-hashed {sum(n for _, n in hashed)} bytes: {hashed}"
    # Sanity: the artifacts are big enough that re-reading them would matter.
    assert (ws / "artifacts/p/w.weights.h5").stat().st_size > 8_000_000
