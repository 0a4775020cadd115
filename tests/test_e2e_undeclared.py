"""End to end: a file or module an export reads without declaring it fails the target, or warns.

Real `doit` runs with real TensorFlow exports. The first run uses one
per-build worker for every job (no export server), so a helper module
imported by an earlier job is not imported again: its import-time read must
still be caught. The later runs go through the export server's forked child.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import built_labels, counts, doit, new_workspace, read_manifests

pytestmark = pytest.mark.e2e

HEADER = "from rules import keras_export, keras_model, keras_train\n"

LIB = '''
import keras


def small():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Dense(2)(inp))
'''


def _files(outside: Path) -> dict[str, str]:
    model = 'keras_model(name="m", factory="{factory}", weights="//lib:w"{data})\n'
    export = 'keras_export(name="e", model=":m")\n'

    def package(factory: str, data: str = "") -> str:
        return HEADER + model.format(factory=factory, data=data) + export

    return {
        "lib/__init__.py": "",
        "lib/model.py": LIB,
        # The weights' training imports the helper below (declaring what it
        # reads): a per-build worker runs it first, so every later job finds
        # the helper imported already.
        "lib/train.py": "from lib import helpers\n\ndef keep(model):\n    pass\n",
        "lib/BUILD.py": HEADER + (
            'keras_train(name="w", factory="lib.model:small", train="lib.train:keep",\n'
            '            data=["settings.json"])\n'
        ),
        # A helper that reads its settings when first imported.
        "lib/helpers.py": (
            "import json\nfrom pathlib import Path\n\n"
            "SETTINGS = json.loads(Path('lib/settings.json').read_text())\n"
        ),
        "lib/settings.json": '{"units": 2}',
        # An undeclared JSON config read by the factory.
        "cfg/__init__.py": "",
        "cfg/config.json": '{"units": 2}',
        "cfg/model.py": (
            "import json\nfrom pathlib import Path\nfrom lib.model import small\n\n"
            "def build():\n"
            "    assert json.loads(Path('cfg/config.json').read_text())['units'] == 2\n"
            "    return small()\n"
        ),
        "cfg/BUILD.py": package("cfg.model:build"),
        # The same factory with the config declared.
        "declared/BUILD.py": package("cfg.model:build", ', data=["../cfg/config.json"]'),
        # A workspace module imported with importlib.
        "dyn/__init__.py": "",
        "dyn/plugin.py": "from lib.model import small\n\ndef make():\n    return small()\n",
        "dyn/model.py": (
            "import importlib\n\ndef build():\n"
            "    return importlib.import_module('dyn.plugin').make()\n"
        ),
        "dyn/BUILD.py": package("dyn.model:build"),
        # The transitively imported helper, declared by one target and not by
        # the other.
        "deep/__init__.py": "",
        "deep/model.py": (
            "from lib import helpers\nfrom lib.model import small\n\n"
            "def build():\n    assert helpers.SETTINGS['units'] == 2\n    return small()\n"
        ),
        "deep/BUILD.py": HEADER + (
            'keras_model(name="a", factory="deep.model:build", weights="//lib:w",\n'
            '            data=["../lib/settings.json"])\n'
            'keras_export(name="a_e", model=":a")\n'
            'keras_model(name="b", factory="deep.model:build", weights="//lib:w")\n'
            'keras_export(name="b_e", model=":b")\n'
        ),
        # A training function's undeclared read: the fix names the keras_train.
        "trainread/__init__.py": "",
        "trainread/rows.csv": "1,2\n",
        "trainread/train.py": (
            "from pathlib import Path\n\n"
            "def fit(model):\n    Path('trainread/rows.csv').read_text()\n"
        ),
        "trainread/BUILD.py": HEADER + (
            'keras_train(name="w", factory="lib.model:small", train="trainread.train:fit")\n'
            'keras_model(name="m", factory="lib.model:small", weights=":w")\n'
            'keras_export(name="e", model=":m")\n'
        ),
        # A read outside the workspace is none of the build's business.
        "outside/__init__.py": "",
        "outside/model.py": (
            "from pathlib import Path\nfrom lib.model import small\n\n"
            f"def build():\n    Path({str(outside)!r}).read_text()\n    return small()\n"
        ),
        "outside/BUILD.py": package("outside.model:build"),
    }


FAILING = {
    "//cfg:e": "//cfg:e: reads cfg/config.json, which it does not declare, so a change to it "
    "would not rebuild the target: add 'config.json' to data of //cfg:m",
    "//dyn:e": "//dyn:e: imports the workspace module dyn.plugin (dyn/plugin.py) dynamically, "
    "so a change to it would not rebuild the target: list 'plugin.py' in data of //dyn:m, "
    "or import it statically",
    "//deep:b_e": "//deep:b_e: reads lib/settings.json, which it does not declare, so a change "
    "to it would not rebuild the target: add '../lib/settings.json' to data of //deep:b",
    "//trainread:w": "//trainread:w: reads trainread/rows.csv, which it does not declare, so a "
    "change to it would not rebuild the target: add 'rows.csv' to data of //trainread:w",
}
PASSING = {"//lib:w", "//declared:e", "//deep:a_e", "//outside:e"}
# //trainread:e cannot be built without the weights of //trainread:w.
FAILED = len(FAILING) + 1


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("undeclared")
    outside = base / "outside-the-workspace.txt"
    outside.write_text("not an input")
    return new_workspace(base / "ws", _files(outside))


@pytest.fixture(scope="module")
def first_run(ws: Path) -> subprocess.CompletedProcess[str]:
    return doit(ws, "--continue", "-n", "1", "export", env={"RULES_KERAS_SERVER": "0"})


def test_undeclared_reads_and_dynamic_imports_fail_naming_the_file_and_the_fix(
    ws: Path, first_run: subprocess.CompletedProcess[str]
) -> None:
    output = first_run.stdout + first_run.stderr
    assert first_run.returncode != 0
    for label, message in FAILING.items():
        assert message in output, (label, output)
    assert counts(first_run)["failed"] == FAILED
    assert built_labels(first_run) == PASSING
    # The import by dyn/plugin.py of lib.model is part of plugin's fix, not a second report.
    assert "lib/model.py" not in output
    # Failed targets publish nothing.
    for package in ("cfg", "dyn"):
        assert not (ws / "artifacts" / package / "e").exists()
    assert not (ws / "artifacts/deep/b_e").exists()


def test_warn_mode_builds_them_and_records_the_warnings(
    ws: Path, first_run: subprocess.CompletedProcess[str]
) -> None:
    warned = doit(ws, "--continue", "export", env={"RULES_KERAS_UNDECLARED_INPUTS": "warn"})
    assert warned.returncode == 0, warned.stdout + warned.stderr
    manifests = read_manifests(ws)
    for label, message in FAILING.items():
        assert manifests[label]["record"]["warnings"] == [message]  # type: ignore[index]
    for label in PASSING | {"//trainread:e"}:
        assert "warnings" not in manifests[label]["record"]  # type: ignore[operator]
    # The setting is in the keys: what warn mode built is not up to date for
    # error mode, which restores the clean targets and fails the others again.
    again = doit(ws, "--continue", "export")
    assert again.returncode != 0
    assert counts(again)["failed"] == FAILED
    for message in FAILING.values():
        assert message in again.stdout + again.stderr
    assert built_labels(again) == set(), again.stdout


def test_declaring_the_file_fixes_the_target(ws: Path) -> None:
    build = ws / "cfg/BUILD.py"
    build.write_text(build.read_text().replace('weights="//lib:w"',
                                               'weights="//lib:w", data=["config.json"]'))
    result = doit(ws, "//cfg:e")
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((ws / "artifacts/cfg/e.manifest.json").read_text())
    assert "cfg/config.json" in manifest["inputs"]["files"]
    (ws / "cfg/config.json").write_text('{"units": 2, "edited": true}')
    rebuilt = doit(ws, "//cfg:e")
    assert built_labels(rebuilt) == {"//cfg:e"}, rebuilt.stdout
