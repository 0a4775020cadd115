"""Tests for rules.execution.audit: which reads and imports count as undeclared inputs.

The decision logic runs on recorded events here, without TensorFlow; the
hook itself runs in a subprocess, because an audit hook, once added, stays
for the life of the process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rules.execution.audit import Event, Finding, Recording, describe, is_read, undeclared
from tests.conftest import REPO, write_tree

READ = os.O_RDONLY | os.O_CLOEXEC
WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    write_tree(root, {
        "models/text/config.json": "{}",
        "models/text/vocab.txt": "a\n",
        "models/text/model.py": "",
        "models/common/plugin.py": "",
        "artifacts/models/text/w.weights.h5": "",
        ".rules_keras/digests.json": "{}",
        "models/text/__pycache__/model.cpython-311.pyc": "",
        "venv/pyvenv.cfg": "",
        "venv/lib/python3.11/site-packages/pkg/data.json": "",
        "lib/site-packages/x.json": "",
    })
    return root


def _opens(root: Path, *rels: str, flags: int = READ) -> list[Event]:
    return [Event("open", str(root / rel), flags) for rel in rels]


def _findings(root: Path, events: list[Event], **kwargs: object) -> list[Finding]:
    recording = Recording(tuple(events), kwargs.pop("by_module", {}))  # type: ignore[arg-type]
    kwargs.setdefault("declared", ["models/text/model.py"])
    kwargs.setdefault("ignored", ["artifacts", ".rules_keras"])
    return undeclared(recording, root=str(root), **kwargs)  # type: ignore[arg-type]


def test_a_read_the_action_did_not_declare_is_found(ws: Path) -> None:
    found = _findings(ws, _opens(ws, "models/text/config.json", "models/text/model.py"))
    assert found == [Finding("read", "models/text/config.json")]


def test_declared_files_are_not_found(ws: Path) -> None:
    events = _opens(ws, "models/text/config.json", "models/text/vocab.txt")
    declared = ["models/text/config.json", "models/text/vocab.txt"]
    assert _findings(ws, events, declared=declared) == []


@pytest.mark.parametrize("rel", [
    "artifacts/models/text/w.weights.h5",
    ".rules_keras/digests.json",
    "models/text/__pycache__/model.cpython-311.pyc",
    "venv/lib/python3.11/site-packages/pkg/data.json",
    "lib/site-packages/x.json",
])
def test_build_output_state_bytecode_and_environments_never_count(ws: Path, rel: str) -> None:
    assert _findings(ws, _opens(ws, rel)) == []


def test_reads_outside_the_workspace_do_not_count(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_text("{}")
    assert _findings(ws, [Event("open", str(outside), READ)]) == []
    # A sibling folder whose name starts with the root's is outside too.
    sibling = tmp_path / "ws-other" / "x.json"
    write_tree(sibling.parent, {"x.json": "{}"})
    assert _findings(ws, [Event("open", str(sibling), READ)]) == []


def test_the_staging_path_folders_and_missing_files_do_not_count(ws: Path) -> None:
    write_tree(ws, {"staged/out/saved_model.pb": ""})
    events = [
        *_opens(ws, "staged/out/saved_model.pb"),
        *_opens(ws, "models/text"),
        *_opens(ws, "models/text/absent.json"),
    ]
    assert _findings(ws, events, out=str(ws / "staged/out")) == []


def test_a_file_the_job_wrote_before_reading_is_an_output(ws: Path) -> None:
    write_tree(ws, {"models/text/cache.json": "{}"})
    written_first = [*_opens(ws, "models/text/cache.json", flags=WRITE),
                     *_opens(ws, "models/text/cache.json")]
    assert _findings(ws, written_first) == []
    read_first = [*_opens(ws, "models/text/config.json"),
                  *_opens(ws, "models/text/config.json", flags=WRITE)]
    assert _findings(ws, read_first) == [Finding("read", "models/text/config.json")]


def test_is_read() -> None:
    assert is_read(os.O_RDONLY) and is_read(os.O_RDWR) and is_read(os.O_RDWR | os.O_APPEND)
    assert not is_read(os.O_WRONLY | os.O_CREAT)
    assert not is_read(os.O_RDWR | os.O_CREAT | os.O_TRUNC)  # "w+"
    assert not is_read(os.O_RDWR | os.O_CREAT | os.O_EXCL)  # a new temp file


def test_a_dynamically_imported_workspace_module_is_found(ws: Path) -> None:
    files = {"models.common.plugin": str(ws / "models/common/plugin.py"),
             "models.text.model": str(ws / "models/text/model.py"),
             "json": "/usr/lib/python3/json/__init__.py"}
    events = [Event("import", name) for name in files]
    # The source read that went with the import is reported once, as the import.
    events += _opens(ws, "models/common/plugin.py")
    found = _findings(ws, events, module_file=files.get)
    assert found == [Finding("import", "models/common/plugin.py", "models.common.plugin")]


def test_what_an_undeclared_module_imports_is_part_of_it(ws: Path) -> None:
    write_tree(ws, {"models/common/extra.py": ""})
    plugin, extra = str(ws / "models/common/plugin.py"), str(ws / "models/common/extra.py")
    files = {"models.common.plugin": plugin, "models.common.extra": extra}
    events = [Event("import", "models.common.plugin", 0, str(ws / "models/text/model.py")),
              Event("import", "models.common.extra", 0, plugin)]
    found = _findings(ws, events, module_file=files.get)
    assert found == [Finding("import", "models/common/plugin.py", "models.common.plugin")]
    # Once plugin.py is declared, what it imports is reported in its turn.
    found = _findings(ws, events, module_file=files.get,
                      declared=["models/text/model.py", "models/common/plugin.py"])
    assert found == [Finding("import", "models/common/extra.py", "models.common.extra")]


def test_what_a_module_read_when_first_imported_counts_for_every_job_using_it(ws: Path) -> None:
    """A per-build worker imports a module once: its import-time reads are replayed."""
    helper = str(ws / "models/common/plugin.py")
    model = str(ws / "models/text/model.py")
    by_module = {
        model: (Event("import", "models.common.plugin", 0, model),),
        helper: tuple(_opens(ws, "models/text/config.json")),
    }
    files = {"models.common.plugin": helper}
    # This job imports nothing new: model.py (declared) was imported by an earlier job.
    found = _findings(ws, [], by_module=by_module, module_file=files.get,
                      declared=["models/text/model.py", "models/common/plugin.py"])
    assert found == [Finding("read", "models/text/config.json")]
    # A job that does not use model.py does not inherit its reads.
    assert _findings(ws, [], by_module=by_module, module_file=files.get,
                     declared=["models/text/vocab.txt"]) == []


def test_messages_name_the_file_and_the_fix_relative_to_the_owner() -> None:
    lines = describe([
        Finding("read", "models/text/vocab.txt"),
        Finding("read", "models/common/config.json"),
        Finding("import", "models/common/plugin.py", "models.common.plugin"),
    ], "//models/text:clf")
    assert lines[0].endswith("add 'vocab.txt' to data of //models/text:clf")
    assert lines[0].startswith("reads models/text/vocab.txt, which it does not declare")
    assert lines[1].endswith("add '../common/config.json' to data of //models/text:clf")
    assert "imports the workspace module models.common.plugin (models/common/plugin.py)" \
        in lines[2]
    assert lines[2].endswith(
        "list '../common/plugin.py' in data of //models/text:clf, or import it statically"
    )
    assert describe([Finding("read", "vocab.txt")], "//:m")[0].endswith(
        "add 'vocab.txt' to data of //:m"
    )


HOOKED = '''
import importlib, json, os, sys
from rules.execution import audit

root = sys.argv[1]
os.chdir(root)
sys.path.insert(0, root)
outside = sys.argv[2]
declared = ["lib/__init__.py", "lib/model.py", "lib/helper.py"]

def job(fn, declared=declared):
    audit.begin(root)
    try:
        fn()
    finally:
        recording = audit.end()
    found = audit.undeclared(recording, root=root, declared=declared, ignored=["artifacts"])
    return [[f.kind, f.path, f.module] for f in found]

def first():
    import lib.model
    lib.model.build()
    open(outside).read()
    importlib.import_module("lib.plugin")

def second():
    # Everything is imported already: the helper's import-time read and the
    # plugin's import must still be seen.
    import lib.model
    lib.model.build()

results = [job(first), job(second)]
# Not recording: nothing is kept. A job whose code is elsewhere inherits nothing.
open("lib/config.json").read()
importlib.import_module("lib.plugin")
results.append(job(lambda: None, declared=["lib/other.py"]))
print(json.dumps(results))
'''


def test_the_hook_records_opens_and_imports_across_jobs_of_one_process(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    write_tree(root, {
        "lib/__init__.py": "",
        "lib/config.json": '{"units": 2}',
        "lib/helper.py": textwrap.dedent("""
            import json
            from pathlib import Path
            CONFIG = json.loads(Path("lib/config.json").read_text())
        """),
        "lib/plugin.py": "",
        "lib/model.py": textwrap.dedent("""
            import importlib
            from lib import helper

            def build():
                importlib.import_module("lib.plugin")
                return helper.CONFIG
        """),
    })
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    result = subprocess.run(
        [sys.executable, "-c", HOOKED, str(root), str(outside)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    first, second, idle = __import__("json").loads(result.stdout)
    expected = [["read", "lib/config.json", ""], ["import", "lib/plugin.py", "lib.plugin"]]
    assert sorted(first) == sorted(expected)
    assert sorted(second) == sorted(expected)
    assert idle == []
