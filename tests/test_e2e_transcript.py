"""The screenshot, as a test: the console of the examples' cold build is one line per
target, the summary, the slowest, and the server's notices; the README shows the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_TARGETS, REPO, copy_examples, doit

pytestmark = pytest.mark.e2e

N = EXAMPLE_TARGETS
TARGET = re.compile(rf"^\[ *(\d+)/{N}\] built (//models/\S+) \(\d+\.\d\d s\)$")
SUMMARY = f"{N} built, 0 restored, 0 up to date, 0 failed"
SLOWEST = re.compile(r"^slowest: " + ", ".join([r"//\S+ \(\d+\.\d\d s\)"] * 3) + "$")
SERVER = re.compile(r"^rules_keras: started the (tensorflow|jax) export server \(pid \d+\); it "
                    r"stays warm for \d+s between builds \(`doit server_stop` stops it\)$")
# The README's transcript sits in the fenced block after this line.
MARKER = "<!-- a cold `doit export` of the examples (tests/test_e2e_transcript.py) -->"


def _check(lines: list[str]) -> set[str]:
    """The transcript's shape; returns the labels it built."""
    targets = [m for m in map(TARGET.match, lines) if m]
    servers = [m.group(1) for m in map(SERVER.match, lines) if m]
    assert len(targets) == N, lines
    assert [int(m.group(1)) for m in targets] == list(range(1, N + 1))
    assert sorted(servers) == ["jax", "tensorflow"], lines  # each said once
    rest = [line for line in lines if not TARGET.match(line) and not SERVER.match(line)]
    assert rest[0] == SUMMARY and SLOWEST.match(rest[1]) and len(rest) == 2, rest
    return {m.group(2) for m in targets}


def _readme_transcript() -> list[str]:
    text = (REPO / "README.md").read_text()
    after = text[text.index(MARKER) + len(MARKER):]
    block = after.split("```", 2)[1]
    lines = block.splitlines()[1:]  # past the fence's language tag
    assert lines[0] == "$ doit export"
    return [line for line in lines[1:] if line]


def test_the_cold_build_of_the_examples_says_only_what_it_built(tmp_path: Path) -> None:
    ws = copy_examples(tmp_path / "ws")
    result = doit(ws, "export")
    assert result.returncode == 0, result.stdout + result.stderr
    # The console a user sees: both streams. Nothing from TensorFlow, tf2onnx, absl...
    built = _check(result.stdout.splitlines() + result.stderr.splitlines())
    # ... which is in the targets' logs instead.
    logs = ws / ".rules_keras/logs/models"
    assert "XNNPACK" in (logs / "mnist/mnist_litert.log").read_text()
    assert _check(_readme_transcript()) == built
