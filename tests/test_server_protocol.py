"""Tests for rules.execution.server.protocol and the client's file handling (no backend needed)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rules.core.fsio import write_json
from rules.execution.server import client as server_client
from rules.execution.server.protocol import (
    RUNTIME_ENV,
    LineReader,
    ServerFolderError,
    fingerprint,
    read_info,
    send,
    server_paths,
    socket_address,
)

TOOLCHAIN = {"python": "CPython 3.11.7", "keras": "keras==3.15.1", "tensorflow": None}


def test_the_server_folder_is_private_even_when_it_existed_with_a_loose_mode(
    tmp_path: Path,
) -> None:
    (tmp_path / "server").mkdir(mode=0o755)
    os.chmod(tmp_path / "server", 0o755)
    paths = server_paths(tmp_path, "tensorflow")
    assert stat.S_IMODE(paths.folder.stat().st_mode) == 0o700
    assert paths.socket == tmp_path / "server" / "tensorflow.sock"
    assert {paths.info.name, paths.log.name, paths.lock.name} == {
        "tensorflow.json", "tensorflow.log", "tensorflow.lock"
    }


def test_a_server_folder_that_is_not_a_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "server").write_text("")
    with pytest.raises(ServerFolderError, match="cannot create"):
        server_paths(tmp_path, "jax")
    assert not (tmp_path / "nowhere" / "server").exists()
    server_paths(tmp_path / "nowhere", "jax", create=False)
    assert not (tmp_path / "nowhere").exists()


def test_the_fingerprint_follows_backend_toolchain_and_pythonpath(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PYTHONPATH", *RUNTIME_ENV):
        monkeypatch.delenv(name, raising=False)
    base = fingerprint("tensorflow", TOOLCHAIN)
    assert base == fingerprint("tensorflow", dict(TOOLCHAIN))
    assert len(base) == 64 and base == base.lower()
    assert fingerprint("jax", TOOLCHAIN) != base
    assert fingerprint("tensorflow", {**TOOLCHAIN, "keras": "keras==3.16.0"}) != base
    assert fingerprint("tensorflow", {**TOOLCHAIN, "TF_ENABLE_ONEDNN_OPTS": "0"}) != base
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    with_path = fingerprint("tensorflow", TOOLCHAIN)
    assert with_path != base
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert fingerprint("tensorflow", TOOLCHAIN) != with_path


def test_a_socket_path_too_long_for_sun_path_still_binds_and_connects(tmp_path: Path) -> None:
    folder = tmp_path / ("x" * 60) / ("y" * 60)
    folder.mkdir(parents=True)
    path = folder / "tensorflow.sock"
    assert len(os.fsencode(path)) > 108
    with socket.socket(socket.AF_UNIX) as listener, socket.socket(socket.AF_UNIX) as client:
        with socket_address(path) as address:
            listener.bind(address)
        listener.listen()
        assert stat.S_ISSOCK(path.stat().st_mode)
        with socket_address(path) as address:
            client.connect(address)
        conn, _ = listener.accept()
        with conn:
            send(client, {"op": "status"})
            assert LineReader(conn).read() == {"op": "status"}


def test_messages_carry_descriptors_with_their_first_bytes(tmp_path: Path) -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        target = tmp_path / "out.txt"
        with open(target, "w") as handle:
            send(left, {"op": "run", "job": "x" * 50_000}, fds=(handle.fileno(),))
        data, fds, _, _ = socket.recv_fds(right, 1 << 20, 2)
        assert len(fds) == 1
        os.write(fds[0], b"through the passed descriptor\n")
        os.close(fds[0])
        assert target.read_text() == "through the passed descriptor\n"
        rest = b""
        while not (data + rest).endswith(b"\n"):
            rest += right.recv(1 << 20)
        assert len(data + rest) > 50_000


def test_a_reader_returns_none_when_the_peer_closes_mid_message() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with right:
        left.sendall(b'{"type": "started", "pid": 7}\n{"type": "res')
        left.close()
        reader = LineReader(right)
        assert reader.read() == {"type": "started", "pid": 7}
        assert reader.read() is None


def test_clean_stale_removes_the_files_of_a_dead_server(tmp_path: Path) -> None:
    paths = server_paths(tmp_path, "tensorflow")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    with socket.socket(socket.AF_UNIX) as left_behind:
        left_behind.bind(str(paths.socket))
    write_json(paths.info, {"pid": pid, "fingerprint": "f" * 64}, durable=False)
    assert server_client.request_status(paths) is None
    assert server_client.status(paths).running is False
    assert not paths.socket.exists() and not paths.info.exists()
    assert read_info(paths) is None


def test_a_live_process_that_is_not_a_server_is_never_killed(tmp_path: Path) -> None:
    paths = server_paths(tmp_path, "tensorflow")
    # A pid file naming some other live process (say, the pid was reused).
    write_json(paths.info, {"pid": os.getpid()}, durable=False)
    note = server_client.clean_stale(paths)
    assert note == f"removed the files left by pid {os.getpid()}"
    assert not paths.info.exists()
    assert server_client.stop(paths) is None
