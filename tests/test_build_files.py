"""Tests for rules.loading.build_files: finding and executing BUILD.py files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from workspace_helpers import REPO, line_of, load, write, write_build

from rules.core.errors import BuildFileError
from rules.loading.build_files import (
    Package,
    find_build_files,
    load_package,
    load_workspace,
    package_name,
)

MODEL = 'keras_model(name="model", factory="m.model:build", weights="w.weights.h5")\n'


def _rel(root: Path, paths: list[Path]) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_find_build_files_is_sorted_and_skips_what_holds_no_packages(tmp_path: Path) -> None:
    for rel in [
        "BUILD.py",
        "b/BUILD.py",
        "a/BUILD.py",
        "a/z/BUILD.py",
        "a/b/c/BUILD.py",
        ".hidden/BUILD.py",
        "a/.git/BUILD.py",
        "artifacts/m/BUILD.py",
        "a/__pycache__/BUILD.py",
        "node_modules/x/BUILD.py",
        "venv/lib/BUILD.py",
        "env2/BUILD.py",
        "lib/site-packages/p/BUILD.py",
        "notbuild/BUILD.txt",
        "notbuild/build.py",
    ]:
        write(tmp_path, rel, "")
    write(tmp_path, "venv/pyvenv.cfg", "home = /usr\n")
    write(tmp_path, "env2/pyvenv.cfg", "")
    assert _rel(tmp_path, find_build_files(tmp_path)) == [
        "BUILD.py",
        "a/BUILD.py",
        "a/b/c/BUILD.py",
        "a/z/BUILD.py",
        "b/BUILD.py",
    ]


def test_find_build_files_in_the_example_workspace() -> None:
    found = _rel(REPO, find_build_files(REPO))
    assert "models/mnist/BUILD.py" in found
    assert not any(p.startswith(("artifacts/", ".")) for p in found)


def test_package_name_and_display_path(tmp_path: Path) -> None:
    assert package_name(tmp_path, tmp_path / "BUILD.py") == ""
    assert package_name(tmp_path, tmp_path / "a" / "b" / "BUILD.py") == "a/b"
    assert Package("", tmp_path / "BUILD.py", ()).display_path == "BUILD.py"
    assert Package("a/b", tmp_path / "a/b/BUILD.py", ()).display_path == "a/b/BUILD.py"


def test_syntax_error_reports_path_and_line(tmp_path: Path) -> None:
    package = load(tmp_path, "m", MODEL + "\n\nkeras_model(name='x'\n")
    assert package.targets == ()
    assert isinstance(package.error, BuildFileError)
    assert package.error.where.startswith("m/BUILD.py:")
    assert int(package.error.where.rsplit(":", 1)[1]) >= 4
    assert "syntax error" in str(package.error)


def test_syntax_error_on_an_exact_line(tmp_path: Path) -> None:
    package = load(tmp_path, "pkg/sub", "x = 1\ny = = 2\n")
    assert package.error is not None
    assert package.error.where == "pkg/sub/BUILD.py:3"
    assert str(package.error).startswith("pkg/sub/BUILD.py:3: syntax error: ")


def test_exception_is_reported_at_its_line(tmp_path: Path) -> None:
    path = write_build(tmp_path, "m", MODEL + "x = 1\n\nraise ValueError('boom here')\n" + MODEL)
    package = load_package(tmp_path, path)
    assert package.targets == ()
    assert package.error is not None
    line = line_of(path, "boom here")
    assert package.error.where == f"m/BUILD.py:{line}"
    assert str(package.error) == f"m/BUILD.py:{line}: ValueError: boom here"


def test_exception_inside_a_helper_is_reported_at_the_innermost_build_line(
    tmp_path: Path,
) -> None:
    path = write_build(
        tmp_path,
        "m",
        """\
        def helper():
            return {}["missing key"]

        helper()
        """,
    )
    package = load_package(tmp_path, path)
    assert package.error is not None
    assert package.error.where == f"m/BUILD.py:{line_of(path, 'missing key')}"
    assert "KeyError" in str(package.error)


def test_exception_from_an_imported_module_is_reported_at_the_import_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "helpers_for_build_test.py", "raise RuntimeError('module failed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_build(tmp_path, "m", "x = 1\nimport helpers_for_build_test\n")
    package = load_package(tmp_path, path)
    assert package.error is not None
    assert package.error.where == "m/BUILD.py:3"
    assert "RuntimeError: module failed" in str(package.error)


def test_missing_build_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    package = load_package(tmp_path, tmp_path / "gone" / "BUILD.py")
    assert package.error is not None and package.error.where == "gone/BUILD.py"


def test_one_broken_package_does_not_stop_the_others(tmp_path: Path) -> None:
    write_build(tmp_path, "a", MODEL)
    write_build(tmp_path, "b", "1 / 0\n")
    write_build(tmp_path, "c", MODEL)
    packages = load_workspace(tmp_path)
    assert [p.name for p in packages] == ["a", "b", "c"]
    assert [p.error is None for p in packages] == [True, False, True]
    assert "ZeroDivisionError" in str(packages[1].error)
    assert len(packages[0].targets) == len(packages[2].targets) == 1


def test_build_file_sees_its_own_file_and_a_private_namespace(tmp_path: Path) -> None:
    write_build(tmp_path, "a", "assert __file__.endswith('BUILD.py')\nleak = 1\n")
    write_build(tmp_path, "b", "assert 'leak' not in globals()\nassert __name__ == 'BUILD:b'\n")
    assert all(p.error is None for p in load_workspace(tmp_path))


def test_the_example_workspace_loads_without_errors() -> None:
    packages = load_workspace(REPO)
    assert packages and all(p.error is None for p in packages)
    assert sum(len(p.targets) for p in packages) >= 10


def test_non_utf8_build_file_is_a_package_error(tmp_path: Path) -> None:
    write(tmp_path, "a/BUILD.py", b"x = '\xff'\n")
    write_build(tmp_path, "b", MODEL)
    packages = load_workspace(tmp_path)
    assert packages[0].error is not None and packages[0].error.where.startswith("a/BUILD.py")
    assert packages[1].error is None


def test_compiled_build_files_are_reused_until_the_file_changes(tmp_path: Path) -> None:
    from rules.loading.code_cache import CodeCache

    build = tmp_path / "BUILD.py"
    build.write_text("X = 1\n")
    os.utime(build, (1_600_000_000, 1_600_000_000))
    store = tmp_path / "code.marshal"
    first = CodeCache(store)
    code = first.compile(build)
    first.save()
    assert str(build) in CodeCache(store)._entries  # kept for the next run
    assert CodeCache(store).compile(build) == code
    # An edit in place that restores size and mtime still changes the ctime.
    build.write_text("X = 2\n")
    os.utime(build, (1_600_000_000, 1_600_000_000))
    namespace: dict[str, object] = {}
    exec(CodeCache(store).compile(build), namespace)
    assert namespace["X"] == 2
    store.write_bytes(b"garbage")  # a damaged cache is ignored, not trusted
    exec(CodeCache(store).compile(build), namespace)
    assert namespace["X"] == 2


def test_a_just_written_build_file_is_not_cached(tmp_path: Path) -> None:
    from rules.loading.code_cache import CodeCache

    build = tmp_path / "BUILD.py"
    build.write_text("X = 1\n")
    store = tmp_path / "code.marshal"
    cache = CodeCache(store)
    cache.compile(build)
    cache.save()
    assert not store.exists()
