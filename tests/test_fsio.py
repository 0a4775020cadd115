"""Tests for rules.core.fsio: atomic and verifying writes survive a crash; temp names; cleanup."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rules.core.fsio import (
    DigestMismatch,
    TempName,
    parse_temp,
    pid_alive,
    remove_abandoned,
    temp_path,
    verified,
    write_atomic,
)

# Writes `new` over the destination, through the verifying stream when asked;
# RULES_KERAS_PAUSE_AT=write_atomic stops it between the write and the rename.
WRITER = r"""
import sys
from pathlib import Path
from rules.core.fsio import verified, write_atomic
dest, mode = Path(sys.argv[1]), sys.argv[2]
data = b"new content " * 1000
if mode == "verified":
    import hashlib
    chunks = verified([data[:5000], data[5000:]], hashlib.sha256(data).hexdigest(), len(data), "t")
    write_atomic(dest, chunks)
else:
    write_atomic(dest, data)
"""


def _crash_between_write_and_rename(dest: Path, mode: str) -> int:
    env = {**os.environ, "RULES_KERAS_PAUSE_AT": "write_atomic"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(dest), mode],
                            env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "paused at write_atomic" in line, line
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("mode", ["plain", "verified"])
def test_a_crash_between_write_and_rename_leaves_the_old_file_and_a_cleanable_temp(
    tmp_path: Path, mode: str
) -> None:
    dest = tmp_path / "entry"
    dest.write_bytes(b"old content")
    pid = _crash_between_write_and_rename(dest, mode)
    assert dest.read_bytes() == b"old content"
    temps = [p for p in tmp_path.iterdir() if p.name != "entry"]
    assert [parse_temp(p.name) for p in temps] == [TempName("tmp", pid, "entry")]
    assert temps[0].stat().st_size == len(b"new content " * 1000)  # written, never renamed
    assert remove_abandoned(tmp_path, ["tmp"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_write_atomic_replaces_whole_and_sets_the_mode(tmp_path: Path) -> None:
    dest = tmp_path / "blob"
    write_atomic(dest, [b"a", b"b"], mode=0o444)
    assert dest.read_bytes() == b"ab" and (dest.stat().st_mode & 0o777) == 0o444
    write_atomic(dest, b"new", durable=False)
    assert dest.read_bytes() == b"new"


def test_a_failing_stream_leaves_nothing_behind(tmp_path: Path) -> None:
    dest = tmp_path / "blob"
    dest.write_bytes(b"old")
    data = b"payload"
    with pytest.raises(DigestMismatch, match="content hashes to"):
        write_atomic(dest, verified([data], "0" * 64, len(data), "blob"))
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob"]


def test_verified_refuses_more_bytes_than_promised_before_passing_them_on() -> None:
    passed: list[bytes] = []
    with pytest.raises(DigestMismatch, match="more than the expected 4 bytes"):
        for chunk in verified([b"abc", b"defgh"], "0" * 64, 4, "blob"):
            passed.append(chunk)
    assert passed == [b"abc"]


def test_verified_short_and_exact_streams() -> None:
    data = b"exactly"
    sha = hashlib.sha256(data).hexdigest()
    assert b"".join(verified([data[:3], data[3:]], sha, len(data), "x")) == data
    with pytest.raises(DigestMismatch, match="6 bytes, expected 7"):
        list(verified([data[:6]], sha, len(data), "x"))


def test_temp_names_parse_back_and_others_do_not(tmp_path: Path) -> None:
    path = temp_path(tmp_path / "saved_model", "staging")
    assert parse_temp(path.name) == TempName("staging", os.getpid(), "saved_model")
    for name in ("saved_model", ".hidden", "ab" * 32, ".tmp-x.1"):
        assert parse_temp(name) is None


def test_remove_abandoned_spares_live_writers_and_other_tags(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / f".staging-{dead}-ab12.m").mkdir()
    (tmp_path / f".staging-{os.getpid()}-ab12.m").mkdir()
    (tmp_path / f".old-{dead}-ab12.other").write_text("x")
    (tmp_path / f".keep-{dead}-ab12.m").write_text("x")
    assert remove_abandoned(tmp_path, ["staging", "old"], name="m") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        f".staging-{os.getpid()}-ab12.m", f".old-{dead}-ab12.other", f".keep-{dead}-ab12.m"
    ])


def test_pid_alive_sees_a_zombie_as_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    while True:  # exited but not reaped: a zombie
        state = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0]
        if state == "Z":
            break
    assert not pid_alive(proc.pid)
    proc.wait()
    assert pid_alive(os.getpid())
