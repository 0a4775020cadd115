"""A job hashes its artifact while it verifies it; the build reuses a digest only for a file
whose stat is still the one it was hashed under."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from rules.core import files as files_module
from rules.core.files import scan_tree
from rules.execution import output_digests
from rules.execution.protocol import JobResult


def _tree(root: Path) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "assets").mkdir()
    (root / "saved_model.pb").write_bytes(b"graph" * 1000)
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(1 << 20))
    return root


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    hashed: list[str] = []
    real = files_module.sha256_file

    def counting(path: Path) -> str:
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(files_module, "sha256_file", counting)
    return hashed


def _hashed_by_the_job(out: Path) -> list[list[Any]]:
    output_digests.written(str(out))
    return output_digests.collect(str(out))


def test_what_the_job_hashed_is_what_the_build_would_find(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _tree(tmp_path / "serving")
    reported = _hashed_by_the_job(out)
    # Across the wire, as a server child or worker sends it.
    result = JobResult.from_wire(JobResult(True, {}, hashed=tuple(reported)).to_wire())
    hashed = _counting(monkeypatch)
    reused = scan_tree(out, output_digests.known(result.hashed))
    assert hashed == [], "the build re-read files the job had hashed"
    monkeypatch.undo()
    assert reused == scan_tree(out)


def test_a_file_changed_after_the_job_hashed_it_is_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _tree(tmp_path / "serving")
    reported = _hashed_by_the_job(out)
    # Same size, new bytes: only the stat (mtime, ctime) tells.
    (out / "saved_model.pb").write_bytes(b"GRAPH" * 1000)
    hashed = _counting(monkeypatch)
    entries, _ = scan_tree(out, output_digests.known(reported))
    assert hashed == ["saved_model.pb"]
    monkeypatch.undo()
    assert entries == scan_tree(out)[0]


def test_a_single_file_artifact_and_a_job_that_hashed_nothing(tmp_path: Path) -> None:
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"w" * 4096)
    reported = _hashed_by_the_job(weights)
    assert [row[0] for row in reported] == ["w.weights.h5"]
    assert scan_tree(weights, output_digests.known(reported)) == scan_tree(weights)
    # A format that never called written(), or a result from a Ray node.
    assert output_digests.collect(str(tmp_path / "other")) == []
    assert output_digests.known(None) == {} and output_digests.known([["x", 1, 2]]) == {}


def test_a_forged_digest_under_a_stale_stamp_is_not_taken(tmp_path: Path) -> None:
    out = _tree(tmp_path / "serving")
    reported = [["saved_model.pb", [0, 0, 5000, 0, 0], "0" * 64]]
    entries, _ = scan_tree(out, output_digests.known(reported))
    assert all(e.sha256 != "0" * 64 for e in entries)
