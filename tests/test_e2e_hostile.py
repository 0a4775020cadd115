"""End to end: the real `doit export` against a hostile cache server that the test starts.

A remote that answers with another action's entry, or with an empty 200, must
cost a local build and a warning per target: nothing it sent is published or
kept (issue 15 §1).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hostile_server import running_hostile

from tests.conftest import (
    assert_artifacts_consistent,
    assert_cache_consistent,
    doit,
    new_workspace,
    read_manifests,
    stop_servers,
    summary,
)
from tests.test_reliability import FILES, TARGETS, reproducible

pytestmark = pytest.mark.e2e


def _outputs(ws: Path) -> dict[str, tuple[object, list[list[object]]]]:
    """Per label, its key and the files every correct build reproduces (weights, variables)."""
    files = reproducible(ws)
    keys = {label: manifest["key"] for label, manifest in read_manifests(ws).items()}
    return {label: (keys[label], files[label]) for label in keys}


@pytest.fixture(scope="module")
def ci(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A clean build of the workspace, and its cache: what the hostile server serves."""
    base = tmp_path_factory.mktemp("hostile")
    ws = new_workspace(base / "ci", FILES)
    result = doit(ws, "export", env={"RULES_KERAS_CACHE_DIR": str(base / "ci-cache")})
    assert result.returncode == 0, result.stdout + result.stderr
    stop_servers()
    return ws, base / "ci-cache"


@pytest.mark.parametrize("mode", ["poison", "empty-200"])
def test_a_lying_remote_costs_a_local_build_and_one_warning_per_entry(
    mode: str, ci: tuple[Path, Path], tmp_path: Path
) -> None:
    ws = new_workspace(tmp_path / "dev", FILES)
    cache = tmp_path / "dev-cache"
    with running_hostile(ci[1], mode) as url:
        env = {"RULES_KERAS_CACHE_DIR": str(cache), "RULES_KERAS_REMOTE_CACHE": url}
        result = doit(ws, "export", env=env)
    stop_servers()
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == f"{TARGETS} built, 0 restored, 0 up to date, 0 failed"
    warnings = [line for line in result.stderr.splitlines() if "not its artifact" in line]
    assert len(warnings) == TARGETS, result.stderr
    assert all(url in line and "building locally" in line for line in warnings)
    # What was published is what a clean build makes, label by label, and it loads.
    assert _outputs(ws) == _outputs(ci[0])
    assert assert_artifacts_consistent(ws) == TARGETS
    # Nothing the server sent was kept: only this build's own entries.
    assert assert_cache_consistent(cache) == TARGETS


def test_a_corrupt_local_entry_is_said_to_be_the_reason(
    ci: tuple[Path, Path], tmp_path: Path
) -> None:
    ws = new_workspace(tmp_path / "dev", FILES)
    cache = tmp_path / "cache"
    shutil.copytree(ci[1], cache)
    for entry in (cache / "ac").glob("*/*"):
        entry.write_bytes(b"")  # a valid, empty ActionResult
    result = doit(ws, "-v", "2", "export", env={"RULES_KERAS_CACHE_DIR": str(cache)})
    stop_servers()
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result) == f"{TARGETS} built, 0 restored, 0 up to date, 0 failed"
    assert result.stdout.count("building: cache entry corrupt; rebuilt") == TARGETS, result.stdout
    assert "no previous build" not in result.stdout
    assert result.stderr.count("is corrupt") == TARGETS, result.stderr
    assert assert_cache_consistent(cache) == TARGETS
