"""Tests for rules.execution.server.runtime: where this user's shared export servers live."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rules.execution.server.protocol import ServerFolderError
from rules.execution.server.runtime import (
    RUNTIME_DIR_ENV,
    environment_key,
    runtime_dir,
    servers_in,
    shared_paths,
)


def test_the_runtime_folder_is_the_variable_then_xdg_then_tmp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path / "mine"))
    assert runtime_dir() == tmp_path / "mine"
    monkeypatch.delenv(RUNTIME_DIR_ENV)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert runtime_dir() == tmp_path / "rules_keras"
    # Missing (or someone else's, as after `su`): the per-user folder in /tmp,
    # never TMPDIR, which builds of one user may set differently.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert runtime_dir() == Path(f"/tmp/rules_keras-{os.getuid()}")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert runtime_dir() == Path(f"/tmp/rules_keras-{os.getuid()}")


def test_shared_paths_are_owner_only_short_and_named_by_backend_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tmp_path / "rt"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(folder))
    paths = shared_paths("tensorflow")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert paths.name == f"tensorflow-{environment_key('tensorflow')}"
    assert paths.socket == folder / f"{paths.name}.sock"
    assert paths.lock.parent == folder and paths.backend == "tensorflow"
    # The default locations leave room in sockaddr_un's ~100 bytes.
    xdg = Path("/run/user/4294967294/rules_keras") / f"{paths.name}.sock"
    assert len(os.fsencode(xdg)) < 70


def test_a_runtime_folder_that_is_not_a_folder_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path / "file"))
    with pytest.raises(ServerFolderError):
        shared_paths("jax")
    shared_paths("jax", create=False)
    os.symlink(tmp_path, tmp_path / "link")
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path / "link"))
    with pytest.raises(ServerFolderError, match="owned by this user"):
        shared_paths("jax")


def test_the_key_separates_what_may_differ_at_once_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES", "TF_ENABLE_ONEDNN_OPTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(RUNTIME_DIR_ENV, raising=False)
    base = environment_key("tensorflow")
    assert len(base) == 12 and environment_key("jax") != base
    # Not where the servers live, nor per-build settings: those are shared.
    monkeypatch.setenv(RUNTIME_DIR_ENV, "/elsewhere")
    monkeypatch.setenv("RULES_KERAS_CACHE_DIR", "/elsewhere")
    monkeypatch.setenv("TMPDIR", "/elsewhere")
    assert environment_key("tensorflow") == base
    for name, value in (("PYTHONPATH", "/src"), ("CUDA_VISIBLE_DEVICES", "1"),
                        ("TF_ENABLE_ONEDNN_OPTS", "0")):
        monkeypatch.setenv(name, value)
        assert environment_key("tensorflow") != base, name
        monkeypatch.delenv(name)


def test_servers_in_lists_every_environment_by_its_files(tmp_path: Path) -> None:
    for name in ("tensorflow-0123456789ab.sock", "jax-ba9876543210.json",
                 "tensorflow-0123456789ab.json", "jax-ffffffffffff.lock", "notes.json"):
        (tmp_path / name).write_text("")
    found = servers_in(tmp_path)
    assert [(p.name, p.backend) for p in found] == [
        ("jax-ba9876543210", "jax"), ("tensorflow-0123456789ab", "tensorflow")
    ]
