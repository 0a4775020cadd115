"""Tests for rules.analysis.action_key: what changes a key, what does not, and explain()."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from workspace_helpers import graph, write, write_build

import rules
from rules.analysis.action_key import (
    KEY_SCHEMA,
    ActionKey,
    InputMissing,
    code_modules,
    compute,
    declared_inputs,
)
from rules.analysis.graph import Action
from rules.analysis.imports import ImportScanner
from rules.analysis.reasons import explain
from rules.core.digests import DigestCache
from rules.core.hashing import sha256_json
from rules.core.toolchain import Toolchain

TOOLCHAIN = Toolchain(
    "CPython 3.11.7",
    (("keras", "keras==3.10.0"), ("tensorflow", "tensorflow-cpu==2.18.0"), ("jax", None)),
    (("numpy", ("numpy",)),),
)

BUILD = """\
keras_train(
    name="w",
    factory="m.model:build",
    train="m.train:fit",
    seed=SEED,
    data=["data.csv"],
    doc="DOC",
)
keras_model(name="model", factory="m.model:build", weights="init.weights.h5")
keras_export(
    name="serve",
    model=":model",
    endpoints=[
        endpoint("serve", inputs=[tensor_spec((None, 3))]),
        endpoint("score", fn="m.fns:score", inputs=[tensor_spec((None, 3))]),
    ],
    tolerance=TOL,
    doc="DOC",
)
"""


def _workspace(root: Path, *, seed: int = 0, tol: str = "1e-5", doc: str = "doc") -> Path:
    write(root, "m/__init__.py", "")
    write(root, "m/model.py", "import numpy\nfrom m import layers\n\ndef build():\n    pass\n")
    write(root, "m/layers.py", "from .blocks import deep\n")
    write(root, "m/blocks/__init__.py", "")
    write(root, "m/blocks/deep.py", "SIZE = 3\n")
    write(root, "m/train.py", "def fit(model):\n    pass\n")
    write(root, "m/fns.py", "from m import helpers\n")
    write(root, "m/helpers.py", "")
    write(root, "m/unrelated.py", "X = 1\n")
    write(root, "other/__init__.py", "")
    write(root, "other/thing.py", "X = 1\n")
    write(root, "m/data.csv", "a,b\n1,2\n")
    write(root, "m/init.weights.h5", bytes(range(64)))
    set_build(root, seed=seed, tol=tol, doc=doc)
    return root


def set_build(root: Path, *, seed: int = 0, tol: str = "1e-5", doc: str = "doc") -> None:
    body = BUILD.replace("SEED", str(seed)).replace("TOL", tol).replace("DOC", doc)
    write_build(root, "m", body)


def _keys(root: Path, toolchain: Toolchain = TOOLCHAIN) -> dict[str, ActionKey]:
    state = root.parent / f".state-{root.name}"
    digests = DigestCache(state / "digests.json")
    scanner = ImportScanner(root, digests, state / "imports.json")
    result = graph(root)
    assert result.failures == (), result.failures
    return {a.label.name: compute(a, root, digests, scanner, toolchain) for a in result.actions}


def _digests(root: Path) -> dict[str, str]:
    return {name: key.digest for name, key in _keys(root).items()}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return _workspace(tmp_path / "ws")


def test_key_is_sha256_of_its_inputs(ws: Path) -> None:
    keys = _keys(ws)
    serve = keys["serve"]
    assert serve.digest == sha256_json(dict(serve.inputs))
    assert len(serve.digest) == 64 and serve.digest == serve.digest.lower()
    assert serve.inputs["schema"] == KEY_SCHEMA
    assert serve.inputs["rules_keras"] == rules.__version__
    assert serve.inputs["kind"] == "keras_export" and keys["w"].inputs["kind"] == "keras_train"
    assert set(serve.inputs["files"]) == {"m/init.weights.h5"}
    assert set(serve.inputs["code"]) == {
        "m/__init__.py",
        "m/blocks/__init__.py",
        "m/blocks/deep.py",
        "m/fns.py",
        "m/helpers.py",
        "m/layers.py",
        "m/model.py",
    }
    assert serve.inputs["third_party"] == {"numpy": __import__("numpy").__version__}
    assert "m/train.py" in keys["w"].inputs["code"]
    assert set(keys["w"].inputs["files"]) == {"m/data.csv"}


def test_a_python_file_in_data_is_code_whose_imports_enter_the_closure(ws: Path) -> None:
    write(ws, "m/plugin.py", "from other import thing\n")
    write_build(ws, "m", BUILD.replace("SEED", "0").replace("TOL", "1e-5").replace("DOC", "d")
                .replace('data=["data.csv"]', 'data=["data.csv", "plugin.py"]'))
    (train,) = [a for a in graph(ws).actions if a.label.name == "w"]
    assert "m.plugin" in code_modules(train)
    assert {"m/plugin.py", "other/thing.py"} <= set(_keys(ws)["w"].inputs["code"])


def test_declared_inputs_are_every_file_the_key_holds(ws: Path) -> None:
    keys = _keys(ws)
    actions = {a.label.name: a for a in graph(ws).actions}
    declared = declared_inputs(actions["serve"], keys["serve"], ignored=(".rules_keras",))
    assert set(declared.files) == {*keys["serve"].inputs["files"], *keys["serve"].inputs["code"]}
    assert "m/init.weights.h5" in declared.files and "m/unrelated.py" not in declared.files
    assert declared.owner == "//m:model" and declared.ignored == ("artifacts", ".rules_keras")
    assert declared_inputs(actions["w"], keys["w"]).owner == "//m:w"


def test_key_is_stable(ws: Path) -> None:
    assert _digests(ws) == _digests(ws)


def _changed(ws: Path, edit: object) -> dict[str, bool]:
    before = _digests(ws)
    edit(ws)  # type: ignore[operator]
    after = _digests(ws)
    return {name: before[name] != after[name] for name in before}


def _flip_byte(path: Path, index: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 1
    path.write_bytes(bytes(data))


def test_one_weights_byte_changes_the_export_key(ws: Path) -> None:
    changed = _changed(ws, lambda r: _flip_byte(r / "m/init.weights.h5"))
    assert changed == {"serve": True, "w": False}


def test_a_data_file_changes_the_train_key(ws: Path) -> None:
    changed = _changed(ws, lambda r: write(r, "m/data.csv", "a,b\n1,3\n"))
    assert changed == {"serve": False, "w": True}


def test_a_transitively_imported_module_changes_the_key(ws: Path) -> None:
    changed = _changed(ws, lambda r: write(r, "m/blocks/deep.py", "SIZE = 4\n"))
    assert changed == {"serve": True, "w": True}


def test_a_module_only_an_endpoint_imports_changes_only_the_export(ws: Path) -> None:
    changed = _changed(ws, lambda r: write(r, "m/helpers.py", "Y = 2\n"))
    assert changed == {"serve": True, "w": False}


def test_a_new_third_party_import_changes_the_key(ws: Path) -> None:
    changed = _changed(ws, lambda r: write(r, "m/blocks/deep.py", "import numpy\nSIZE = 3\n"))
    assert changed["serve"]


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: write(r, "m/unrelated.py", "X = 2\n"),
        lambda r: write(r, "other/thing.py", "X = 2\n"),
        lambda r: set_build(r, doc="a different doc string"),
        lambda r: write(r, "README.md", "notes"),
    ],
    ids=["unrelated-module", "other-package", "doc", "readme"],
)
def test_unrelated_changes_keep_every_key(ws: Path, edit: object) -> None:
    assert _changed(ws, edit) == {"serve": False, "w": False}


def test_attributes_change_the_key(ws: Path) -> None:
    assert _changed(ws, lambda r: set_build(r, seed=1)) == {"serve": False, "w": True}
    assert _changed(ws, lambda r: set_build(r, seed=1, tol="1e-3")) == {
        "serve": True,
        "w": False,
    }


def test_the_toolchain_changes_every_key(ws: Path) -> None:
    newer = Toolchain(
        TOOLCHAIN.python,
        (("keras", "keras==3.11.0"), *TOOLCHAIN.modules[1:]),
        TOOLCHAIN.module_dists,
    )
    other_python = Toolchain("CPython 3.12.0", TOOLCHAIN.modules, TOOLCHAIN.module_dists)
    base = _keys(ws)
    for chain in (newer, other_python):
        moved = _keys(ws, chain)
        assert all(moved[n].digest != base[n].digest for n in base)


def test_the_key_does_not_depend_on_the_workspace_location(tmp_path: Path) -> None:
    first = _workspace(tmp_path / "one")
    second = tmp_path / "elsewhere" / "deeper" / "two"
    shutil.copytree(first, second)
    assert _digests(first) == _digests(second)


def test_a_missing_input_raises_input_missing(ws: Path) -> None:
    state = ws.parent / ".state-missing"
    digests = DigestCache(state / "d.json")
    scanner = ImportScanner(ws, digests, state / "i.json")
    action = next(a for a in graph(ws).actions if a.label.name == "serve")
    (ws / "m/init.weights.h5").unlink()
    with pytest.raises(InputMissing, match=r"m/init\.weights\.h5"):
        compute(action, ws, digests, scanner, TOOLCHAIN)


def test_code_modules_of_train_and_export(ws: Path) -> None:
    actions: dict[str, Action] = {a.label.name: a for a in graph(ws).actions}
    assert code_modules(actions["w"]) == ["m.model", "m.train"]
    assert code_modules(actions["serve"]) == ["m.fns", "m.model"]


def test_explain_without_a_previous_build() -> None:
    assert explain(None, {"files": {}}) == ["no previous build"]
    assert explain({}, {"files": {}}) == ["no previous build"]


def test_explain_names_changed_files_with_digest_prefixes(ws: Path) -> None:
    old = _keys(ws)["serve"].inputs
    _flip_byte(ws / "m/init.weights.h5")
    write(ws, "m/blocks/deep.py", "SIZE = 5\n")
    new = _keys(ws)["serve"].inputs
    reasons = explain(old, new)
    weights_old, weights_new = old["files"]["m/init.weights.h5"], new["files"]["m/init.weights.h5"]
    assert f"m/init.weights.h5: {weights_old[:12]} -> {weights_new[:12]}" in reasons
    deep_old, deep_new = old["code"]["m/blocks/deep.py"], new["code"]["m/blocks/deep.py"]
    assert f"m/blocks/deep.py: {deep_old[:12]} -> {deep_new[:12]}" in reasons
    assert len(reasons) == 2


def test_explain_added_and_removed_code(ws: Path) -> None:
    old = _keys(ws)["serve"].inputs
    write(ws, "m/layers.py", "from m import extra\n")
    write(ws, "m/extra.py", "")
    new = _keys(ws)["serve"].inputs
    reasons = explain(old, new)
    assert any(r.startswith("m/extra.py: added (") for r in reasons)
    assert any(r.startswith("m/blocks/deep.py: removed (was ") for r in reasons)


def test_explain_versions_and_attributes(ws: Path) -> None:
    old = _keys(ws)["serve"].inputs
    set_build(ws, tol="0.5")
    newer = Toolchain(
        TOOLCHAIN.python,
        (("keras", "keras==3.11.0"), *TOOLCHAIN.modules[1:]),
        TOOLCHAIN.module_dists,
    )
    new = _keys(ws, newer)["serve"].inputs
    reasons = explain(old, new)
    assert "keras: keras==3.10.0 -> keras==3.11.0" in reasons
    assert "attribute tolerance: 1e-05 -> 0.5" in reasons
    assert len(reasons) == 2


def test_explain_third_party_and_top_level_fields() -> None:
    old = {"third_party": {"numpy": "2.0"}, "backend": "tensorflow", "attrs": {}}
    new = {"third_party": {"numpy": "2.1"}, "backend": "jax", "attrs": {"seed": 1}}
    assert explain(old, new) == [
        "numpy: 2.0 -> 2.1",
        "attribute seed: None -> 1",
        "backend: tensorflow -> jax",
    ]


def test_explain_attribute_changes_structurally() -> None:
    """Issue 10: a prefix of two long reprs is not a reason; the path to the change is."""

    def ep(name: str, shape: list[int | None]) -> dict[str, object]:
        tensor = {"tensor": {"shape": shape, "dtype": "float32", "name": None}}
        return {"name": name, "fn": "call", "training": None, "inputs": [tensor]}

    old = {"attrs": {"endpoints": [ep("serve", [None, 16]), ep("serve_training", [None, 16])]}}
    new = {"attrs": {"endpoints": [ep("serve", [None, 32]), ep("train_mode", [None, 16])]}}
    assert explain(old, new) == [
        "attribute endpoint 'serve_training' removed, 'train_mode' added",
        "attribute endpoints[0].inputs[0].shape: (None, 16) -> (None, 32)",
    ]
    added = explain({"attrs": {}}, {"attrs": {"format_options": {"opset_version": 17}}})
    assert added == ["attribute format_options.opset_version added: 17"]
    long = explain({"attrs": {"factory": "m." + "x" * 200}}, {"attrs": {"factory": "m.y"}})
    assert long == [f"attribute factory: {repr('m.' + 'x' * 200)[:77]}... -> 'm.y'"]


def test_explain_with_identical_inputs_blames_the_artifact(ws: Path) -> None:
    inputs = _keys(ws)["serve"].inputs
    assert explain(inputs, inputs) == ["artifact missing or modified"]
