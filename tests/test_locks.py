"""Tests for build locks: processes and threads exclude each other, waits are announced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rules.locks import LockTimeout, action_lock_path, hold, output_lock_path

REPO = Path(__file__).resolve().parents[1]

# Holds the lock given on the command line until a line (or EOF) arrives on stdin.
_HOLDER = """
import sys
from pathlib import Path
from rules.locks import hold
with hold(Path(sys.argv[1]), what="holder", timeout=5, on_wait=print):
    print("held", flush=True)
    sys.stdin.readline()
"""

# Tries to take the lock like a second doit process would, reporting on stderr.
_WAITER = """
import sys
from pathlib import Path
from rules.locks import LockTimeout, hold
def notice(message):
    print(message, file=sys.stderr, flush=True)
try:
    with hold(Path(sys.argv[1]), what="//models:mnist export", timeout=float(sys.argv[2]),
              notice_after=0.2, on_wait=notice):
        print("acquired", flush=True)
except LockTimeout as error:
    print(f"LockTimeout: {error}", file=sys.stderr, flush=True)
    sys.exit(3)
"""


def _python(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _start_holder(lock: Path) -> subprocess.Popen[bytes]:
    holder = _python(_HOLDER, str(lock))
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"held\n"
    return holder


def test_second_process_announces_the_wait_then_times_out(tmp_path: Path) -> None:
    lock = action_lock_path(tmp_path, "a" * 64)
    holder = _start_holder(lock)
    try:
        waiter = _python(_WAITER, str(lock), "0.7")
        out, err = waiter.communicate(timeout=10)
    finally:
        holder.kill()
        holder.wait()
    assert waiter.returncode == 3
    assert out == b""
    lines = err.decode().splitlines()
    assert lines[0] == f"waiting for //models:mnist export (lock {lock})"
    assert len(lines) == 2
    assert lines[1].startswith(
        "LockTimeout: timed out after 0.7s waiting for //models:mnist export"
    )
    assert str(lock) in lines[1]
    assert "Another doit process" in lines[1]


def test_second_process_waits_then_gets_the_lock(tmp_path: Path) -> None:
    lock = action_lock_path(tmp_path, "b" * 64)
    holder = _start_holder(lock)
    waiter = _python(_WAITER, str(lock), "20")
    assert waiter.stderr is not None and holder.stdin is not None
    # Release only once the waiter has announced that it waits.
    notice = waiter.stderr.readline()
    assert notice == f"waiting for //models:mnist export (lock {lock})\n".encode()
    holder.stdin.close()
    holder.wait()
    out, err = waiter.communicate(timeout=20)
    assert waiter.returncode == 0, err.decode()
    assert out == b"acquired\n"
    assert b"waiting" not in err


def test_lock_left_by_a_killed_holder_is_free(tmp_path: Path) -> None:
    lock = action_lock_path(tmp_path, "c" * 64)
    holder = _start_holder(lock)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock.exists()  # the file stays behind; the OS lock died with the process
    notices: list[str] = []
    started = time.monotonic()
    with hold(lock, what="x", timeout=1, on_wait=notices.append):
        pass
    assert time.monotonic() - started < 0.5
    assert notices == []


def test_no_notice_when_the_lock_is_free(tmp_path: Path) -> None:
    notices: list[str] = []
    lock = output_lock_path(tmp_path, "artifacts/mnist/saved_model")
    with hold(lock, what="x", timeout=1, notice_after=0, on_wait=notices.append):
        assert lock.exists()
    assert notices == []


def test_two_threads_exclude_each_other(tmp_path: Path) -> None:
    lock = action_lock_path(tmp_path, "d" * 64)
    inside = 0
    most = 0
    guard = threading.Lock()
    failures: list[BaseException] = []

    def worker() -> None:
        nonlocal inside, most
        try:
            for _ in range(5):
                with hold(lock, what="t", timeout=5, on_wait=lambda _m: None):
                    with guard:
                        inside += 1
                        most = max(most, inside)
                    time.sleep(0.02)
                    with guard:
                        inside -= 1
        except BaseException as error:  # surfaced in the main thread below
            failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert most == 1


def test_thread_waiting_on_another_thread_times_out(tmp_path: Path) -> None:
    lock = output_lock_path(tmp_path, "artifacts/x")
    held = threading.Event()
    release = threading.Event()

    def owner() -> None:
        with hold(lock, what="owner", timeout=1, on_wait=lambda _m: None):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=owner)
    thread.start()
    try:
        assert held.wait(5)
        notices: list[str] = []
        with (
            pytest.raises(LockTimeout, match="waiting for //a:b"),
            hold(lock, what="//a:b", timeout=0.3, notice_after=0.1, on_wait=notices.append),
        ):
            pass
        assert notices == [f"waiting for //a:b (lock {lock})"]
    finally:
        release.set()
        thread.join()


def test_timeout_shorter_than_the_notice_skips_the_notice(tmp_path: Path) -> None:
    lock = action_lock_path(tmp_path, "e" * 64)
    holder = _start_holder(lock)
    try:
        notices: list[str] = []
        with (
            pytest.raises(LockTimeout, match=r"after 0\.2s"),
            hold(lock, what="x", timeout=0.2, notice_after=2, on_wait=notices.append),
        ):
            pass
        assert notices == []
    finally:
        holder.kill()
        holder.wait()


def test_lock_paths_live_in_locks_dir_with_safe_names(tmp_path: Path) -> None:
    key = "f" * 64
    assert action_lock_path(tmp_path, key) == tmp_path / "locks" / f"action-{key}.lock"
    out = output_lock_path(tmp_path, "artifacts/../weird name/x")
    assert out.parent == tmp_path / "locks"
    assert out.name.startswith("output-") and "/" not in out.name and " " not in out.name
    assert output_lock_path(tmp_path, "a/b") == output_lock_path(tmp_path, Path("a/b").as_posix())
    assert output_lock_path(tmp_path, "a/b") != output_lock_path(tmp_path, "a/c")


def test_lock_timeout_is_not_an_oserror() -> None:
    # Callers downgrade OSErrors from the cache to warnings; a lock timeout must
    # still fail the build with its own message.
    assert not issubclass(LockTimeout, OSError)
