"""A quiet build: what a job prints goes to its target's log, the console has one line per
target, and a failing target shows its error, its log's last lines and the log's path."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import built_labels, doit, new_workspace, summary

pytestmark = pytest.mark.e2e

HEADER = "from rules import keras_export, keras_model, keras_train\n"
LIB = '''
import logging
import os
import sys
import warnings

import keras


def noisy():
    print("noisy: print to stdout")
    sys.stderr.write("noisy: write to sys.stderr\\n")
    os.write(2, b"noisy: native write to fd 2\\n")
    logging.getLogger("absl").warning("noisy: absl warning")
    warnings.warn("noisy: np.object is deprecated", FutureWarning)
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Dense(2)(inp))


def fit(model):
    print("noisy: training")


def broken():
    for n in range(40):
        print(f"broken: line {n}")
    raise RuntimeError("the factory is broken on purpose")
'''
FILES = {
    "lib/__init__.py": "",
    "lib/model.py": LIB,
    "ok/BUILD.py": HEADER + (
        'keras_train(name="w", factory="lib.model:noisy", train="lib.model:fit")\n'
        'keras_model(name="m", factory="lib.model:noisy", weights=":w")\n'
        'keras_export(name="e", model=":m")\n'
    ),
    "bad/BUILD.py": HEADER + (
        'keras_train(name="w", factory="lib.model:broken", train="lib.model:fit")\n'
        'keras_model(name="m", factory="lib.model:noisy", weights=":w")\n'
        'keras_export(name="e", model=":m")\n'
    ),
}
TARGET_LINE = re.compile(r"^\[ *\d+/4\] (built|failed|skipped) //(ok|bad):[ewm]\b")


def _console(result: subprocess.CompletedProcess[str]) -> list[str]:
    return (result.stdout + result.stderr).splitlines()


@pytest.mark.parametrize("server", ["1", "0"], ids=["server-child", "per-build-worker"])
def test_job_output_goes_to_the_log_and_a_failure_shows_its_tail(
    tmp_path: Path, server: str
) -> None:
    ws = new_workspace(tmp_path / "ws", FILES)
    result = doit(ws, "--continue", "export", env={"RULES_KERAS_SERVER": server})
    assert result.returncode != 0
    assert summary(result) == "2 built, 0 restored, 0 up to date, 2 failed", result.stdout
    assert built_labels(result) == {"//ok:w", "//ok:e"}

    # Nothing the successful jobs printed reaches the console ...
    console = _console(result)
    assert not [line for line in console if "noisy:" in line], "\n".join(console)
    # ... it is all in their logs, Python's and native alike.
    log = (ws / ".rules_keras/logs/ok/e.log").read_text()
    for said in ("print to stdout", "write to sys.stderr", "native write to fd 2",
                 "absl warning", "FutureWarning: noisy: np.object is deprecated"):
        assert f"{said}" in log, log
    # The warning is in each log of a process that ran both jobs, not only the first.
    assert "FutureWarning" in (ws / ".rules_keras/logs/ok/w.log").read_text()

    # The failure: the headline, the traceback, the log's last 30 lines and its path.
    out = result.stdout
    assert re.search(r"^\[ *\d+/4\] failed //bad:w \(\d+\.\d\d s\)$", out, re.M), out
    assert "//bad:w: " in out and "RuntimeError: the factory is broken on purpose" in out
    assert "broken: line 39" in out and "broken: line 10" in out
    assert "broken: line 9\n" not in out  # only the last 30 lines
    assert "full log: .rules_keras/logs/bad/w.log" in out
    assert re.search(r"^\[ *\d+/4\] skipped //bad:e \(a dependency failed\)$", out, re.M)

    # The rest of the console: a line per target, the counts, and the server's notice.
    others = [line for line in console
              if not TARGET_LINE.match(line) and not line.startswith("    ")
              and not re.match(r"^\d+ built, ", line) and not line.startswith("slowest: ")]
    if server == "1":
        assert len(others) == 1 and "started the tensorflow export server" in others[0], others
    else:
        assert others == ["rules_keras: starting a tensorflow worker"], others
        # What the worker printed outside a job (TensorFlow's import) has a log of its own.
        assert (ws / ".rules_keras/workers/tensorflow.log").exists()


def test_doit_v2_shows_the_logs_of_successful_targets(tmp_path: Path) -> None:
    files = {k: v for k, v in FILES.items() if not k.startswith("bad/")}
    ws = new_workspace(tmp_path / "ws", files)
    result = doit(ws, "-v", "2", "export", env={"RULES_KERAS_SERVER": "0"})
    assert summary(result) == "2 built, 0 restored, 0 up to date, 0 failed", result.stdout
    assert "noisy: native write to fd 2" in result.stdout
    assert "//ok:e: building: no previous build" in result.stdout
    quiet = doit(ws, "-a", "export", env={"RULES_KERAS_SERVER": "0"})
    assert summary(quiet) == "2 built, 0 restored, 0 up to date, 0 failed", quiet.stdout
    assert "noisy:" not in quiet.stdout + quiet.stderr


SLOW = {
    "lib/__init__.py": "",
    "lib/model.py": LIB + '''

def slow():
    import time
    time.sleep(2)
    return noisy()
''',
    "ok/BUILD.py": HEADER + (
        'keras_train(name="w", factory="lib.model:slow", train="lib.model:fit")\n'
        'keras_model(name="m", factory="lib.model:noisy", weights=":w")\n'
        'keras_export(name="e", model=":m")\n'
    ),
}


def test_a_terminal_gets_a_live_status_line_and_ci_gets_none(tmp_path: Path) -> None:
    import os
    import pty
    import sys

    ws = new_workspace(tmp_path / "ws", SLOW)
    env = {**os.environ, "RULES_KERAS_SERVER": "0",
           "RULES_KERAS_CACHE_DIR": str(tmp_path / "cache")}
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "doit", "export"], cwd=ws, env=env,
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.wait(timeout=300) == 0, seen.decode(errors="replace")
    text = seen.decode(errors="replace")
    assert "\r\x1b[K[0/2] running //ok:w " in text
    assert "[1/2] built //ok:w (" in text and "2 built, 0 restored, 0 up to date, 0 failed" in text
    quiet = doit(ws, "-a", "export", env={"RULES_KERAS_SERVER": "0"})
    assert "\x1b" not in quiet.stdout + quiet.stderr
