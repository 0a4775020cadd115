"""Helpers that write small real workspaces (BUILD.py files, model modules) into tmp_path."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from rules.analysis.graph import BuildGraph, analyse
from rules.loading.build_files import BUILD_FILE, Package, load_package, load_workspace
from rules.loading.labels import Label

REPO = Path(__file__).resolve().parents[1]
HEADER = "from rules import endpoint, keras_export, keras_model, keras_train, tensor_spec\n"
# A timestamp far enough in the past that DigestCache treats the file as settled.
OLD = 1_600_000_000


def write(root: Path, rel: str, content: str | bytes) -> Path:
    """Write `content` (dedented when text) to root/rel, creating parent folders."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(textwrap.dedent(content), encoding="utf-8")
    return path


def age(path: Path, seconds: int = OLD) -> None:
    """Give `path` an old mtime so the digest cache may remember it."""
    os.utime(path, (seconds, seconds))


def build_text(body: str) -> str:
    """A BUILD.py: the rules import on line 1, then the dedented body from line 2."""
    return HEADER + textwrap.dedent(body).lstrip("\n")


def write_build(root: Path, package: str, body: str) -> Path:
    """Write `<package>/BUILD.py` with the rules import on line 1."""
    rel = f"{package}/{BUILD_FILE}" if package else BUILD_FILE
    return write(root, rel, build_text(body))


def load(root: Path, package: str, body: str) -> Package:
    """Write and load one BUILD.py."""
    return load_package(root, write_build(root, package, body))


def line_of(path: Path, needle: str) -> int:
    """1-based number of the first line of `path` containing `needle`."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def graph(root: Path) -> BuildGraph:
    """Load and analyse every BUILD.py under root."""
    return analyse(root, load_workspace(root))


def failures(result: BuildGraph) -> dict[str, str]:
    """Failure messages keyed by label (or BUILD.py path for load errors)."""
    return {f.name: f.message for f in result.failures}


def action_labels(result: BuildGraph) -> list[str]:
    return [str(a.label) for a in result.actions]


def label(text: str) -> Label:
    return Label.parse(text)


def model_package(root: Path, package: str = "m", *, extra_build: str = "") -> None:
    """A package with a model module, a train module, a vocab file and three targets.

    //m:w (keras_train) -> //m:model (keras_model) -> //m:serve (keras_export).
    """
    dotted = package.replace("/", ".")
    write(root, f"{package}/__init__.py", "")
    write(
        root,
        f"{package}/model.py",
        """\
        import numpy


        def build():
            return numpy.zeros(1)
        """,
    )
    write(root, f"{package}/train.py", "def fit(model):\n    return None\n")
    write(root, f"{package}/vocab.txt", "a\nb\n")
    write_build(
        root,
        package,
        textwrap.dedent(
            f"""\
        keras_train(
            name="w",
            factory="{dotted}.model:build",
            train="{dotted}.train:fit",
            data=["vocab.txt"],
        )
        keras_model(name="model", factory="{dotted}.model:build", weights=":w")
        keras_export(
            name="serve",
            model=":model",
            endpoints=[endpoint("serve", inputs=[tensor_spec((None, 3))])],
            doc="the export",
        )
        """
        )
        + textwrap.dedent(extra_build),
    )
