"""End to end: the warm export server with real doit processes, real servers and kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rules.core.fsio import pid_alive
from rules.core.job import ExportJob
from rules.execution.pool import WORKERS_AFTER
from rules.execution.protocol import JobRequest
from rules.execution.server import client as server_client
from rules.execution.server.protocol import ServerPaths
from rules.execution.server.route import COLD_BUILD
from rules.execution.server.runtime import servers_in, shared_paths
from tests.conftest import (
    TINY_MODELS,
    built_labels,
    doit,
    new_workspace,
    server_info,
    stop_servers,
    summary,
    write_tree,
)

pytestmark = pytest.mark.e2e

MODEL = '''
"""Tiny models; importing prints a marker so that tests see each fresh import."""
import os
import time

VERSION = 1
print(f"lib.model imported (version {VERSION}, pid {os.getpid()})", flush=True)
''' + TINY_MODELS + '''

def blocking():
    """The first call in this workspace hangs until it is killed; later ones build small()."""
    try:
        fd = os.open("first_attempt.pid", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return small()
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    while True:
        time.sleep(1)
'''

WEIGHTS = """
import sys
sys.path.insert(0, ".")
from lib.model import small, other
small().save_weights("p1/small.weights.h5")
other().save_weights("p2/other.weights.h5")
"""

HEADER = "from rules import keras_export, keras_model\n"
FILES = {
    "lib/__init__.py": "",
    "lib/model.py": MODEL,
    "p1/BUILD.py": HEADER + (
        'keras_model(name="m", factory="lib.model:small", weights="small.weights.h5")\n'
        'keras_export(name="e", model=":m")\n'
    ),
    "p2/BUILD.py": HEADER + (
        'keras_model(name="m", factory="lib.model:other", weights="other.weights.h5")\n'
        'keras_export(name="e", model=":m")\n'
    ),
}
SHARED_MODEL = '''
import keras
from common.util import WIDTH


def build():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Dense(WIDTH, name="out")(inp))
'''
SHARED_WEIGHTS = '''
import sys
import keras
for name, width in (("ws1", 2), ("ws2", 5)):
    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, keras.layers.Dense(width, name="out")(inp))
    model.save_weights(f"{sys.argv[1]}/{name}/p/net.weights.h5")
'''
OUTPUT_WIDTH = '''
import sys
import tensorflow as tf
for path in sys.argv[1:]:
    outputs = tf.saved_model.load(path).signatures["serving_default"].structured_outputs
    print(*(spec.shape[-1] for spec in outputs.values()))
'''
BLOCK = {
    "block/BUILD.py": HEADER + (
        'keras_model(name="m", factory="lib.model:blocking", weights="small.weights.h5")\n'
        'keras_export(name="e", model=":m")\n'
    ),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = new_workspace(tmp_path_factory.mktemp("server") / "template", FILES)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-c", WEIGHTS], cwd=root, env=env, check=True,
                   capture_output=True, timeout=300)
    return root


@pytest.fixture
def ws(template: Path, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "ws"
    shutil.copytree(template, root, ignore=shutil.ignore_patterns("__pycache__"))
    yield root
    stop_servers()


def _paths(backend: str = "tensorflow") -> ServerPaths:
    """The server's files: in the test's runtime folder, not in any workspace."""
    return shared_paths(backend, create=False)


def _pid(ws: Path) -> int:
    info = server_info()
    assert info is not None, f"no server info in {_paths().folder}"
    pid = info["pid"]
    assert isinstance(pid, int)
    return pid


def _alive(pid: int) -> bool:
    return pid_alive(pid)


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _spawn(ws: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    env["RULES_KERAS_CACHE_DIR"] = str(ws.parent / "cache")
    return subprocess.Popen(
        [sys.executable, "-m", "doit", *args], cwd=ws, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def _start_blocked_build(ws: Path) -> tuple[subprocess.Popen[str], int]:
    """Start `doit //block:e`; returns it once its export hangs, and the export's pid."""
    write_tree(ws, BLOCK)
    shutil.copy(ws / "p1/small.weights.h5", ws / "block/small.weights.h5")
    proc = _spawn(ws, "//block:e")
    marker = ws / "first_attempt.pid"

    def started() -> bool:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the build ended before its export started:\n{out}{err}")
        return marker.exists() and marker.read_text() != ""

    _wait(started, 300, "the export to start")
    return proc, int(marker.read_text())


def test_the_first_build_starts_a_private_server_and_rebuilds_run_warm_on_fresh_code(
    ws: Path,
) -> None:
    # -v 2: what each job printed, from its log, on the console.
    first = _ok(doit(ws, "-v", "2", "-n", "2", "export"))
    assert "started the tensorflow export server" in first.stderr
    assert "starting a tensorflow worker" not in first.stderr
    assert summary(first) == "2 built, 0 restored, 0 up to date, 0 failed"
    pid = _pid(ws)
    paths = _paths()
    assert stat.S_IMODE(paths.folder.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(paths.socket.stat().st_mode)
    assert stat.S_IMODE(paths.socket.stat().st_mode) == 0o600
    assert not (ws / ".rules_keras/server").exists()
    # The model code's output reaches the build's stdout, from a child of the server.
    assert first.stdout.count("lib.model imported (version 1") == 2

    # A no-op neither contacts nor starts anything.
    noop = _ok(doit(ws, "export", env={"PYTHONPROFILEIMPORTTIME": "1"}))
    assert summary(noop) == "0 built, 0 restored, 2 up to date, 0 failed"
    assert "export server" not in noop.stderr and "starting a" not in noop.stderr
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0]
               for line in noop.stderr.splitlines() if "import time:" in line}
    assert modules and not modules & {"tensorflow", "keras", "jax"}
    status = server_client.request_status(_paths())
    assert status is not None and status["jobs"] == 2
    assert status["workspaces"] == {str(ws): 2} and status["workspace_modules"] == []

    model = ws / "lib/model.py"
    model.write_text(model.read_text().replace("VERSION = 1", "VERSION = 2"))
    second = _ok(doit(ws, "-v", "2", "export"))
    assert f"using the warm tensorflow export server (pid {pid})" in second.stderr
    assert "starting a tensorflow worker" not in second.stderr
    assert built_labels(second) == {"//p1:e", "//p2:e"}
    # Each export imported the edited module from disk, not a copy the server kept.
    assert second.stdout.count("lib.model imported (version 2") == 2
    assert "version 1" not in second.stdout
    assert _pid(ws) == pid


def test_an_idle_server_exits_and_removes_its_socket(ws: Path) -> None:
    _ok(doit(ws, "export", env={"RULES_KERAS_SERVER_IDLE_TIMEOUT": "2"}))
    pid = _pid(ws)
    _wait(lambda: not _alive(pid), 60, "the idle server to exit")
    paths = _paths()
    assert not paths.socket.exists()
    assert not paths.info.exists()
    assert "exiting: idle for 2s" in paths.log.read_text()


def test_a_numerics_variable_gets_a_server_of_its_own(ws: Path) -> None:
    # Two builds may differ in it at the same time: they must not restart each
    # other's server on every job, so it is part of the server's name.
    _ok(doit(ws, "export"))
    old = _pid(ws)
    changed = _ok(doit(ws, "-v", "2", "export", env={"TF_ENABLE_ONEDNN_OPTS": "0"}))
    # The variable enters the action key too: both targets rebuild, and say why.
    assert built_labels(changed) == {"//p1:e", "//p2:e"}
    assert "TF_ENABLE_ONEDNN_OPTS: None -> 0" in changed.stdout
    assert "started the tensorflow export server" in changed.stderr
    assert _alive(old) and _pid(ws) == old
    names = {p.name for p in _paths().folder.glob("tensorflow-*.sock")}
    assert len(names) == 2, names
    status = _ok(doit(ws, "server_status"))
    assert f"tensorflow: running, pid {old}" in status.stdout
    assert "another environment's tensorflow server: pid " in status.stdout


def test_a_stale_server_retires_in_place_and_finishes_its_running_job(ws: Path) -> None:
    # A new toolchain or rules source under the same environment: the stale
    # server hands its name over at once but lets another build's job finish.
    _ok(doit(ws, "export"))
    old = _pid(ws)
    proc, child = _start_blocked_build(ws)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    how, new = server_client.ensure_running(_paths(), "0" * 64, 60.0, env)
    assert how == "restarted" and new != old
    assert _pid(ws) == new
    assert _alive(old) and _alive(child), "the retired server killed a running job"
    os.kill(child, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    _wait(lambda: not _alive(old), 30, "the retired server to exit after its last job")
    assert "exiting: asked to retire" in _paths().log.read_text()


def test_two_workspaces_share_one_server_and_never_see_each_others_modules(
    tmp_path: Path,
) -> None:
    # Same module names (common.util, net.model), different code: each
    # workspace's export must be built from its own, by one shared server.
    widths = {"ws1": 2, "ws2": 5}
    for name, width in widths.items():
        new_workspace(tmp_path / name, {
            "common/__init__.py": "",
            "common/util.py": (f"import os\nWIDTH = {width}\nprint(f'common.util imported "
                               "(WIDTH {WIDTH}, pid {os.getpid()})', flush=True)\n"),
            "net/__init__.py": "",
            "net/model.py": SHARED_MODEL,
            "p/BUILD.py": HEADER + (
                'keras_model(name="m", factory="net.model:build", weights="net.weights.h5")\n'
                'keras_export(name="e", model=":m")\n'
            ),
        })
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-c", SHARED_WEIGHTS, str(tmp_path)], env=env, check=True,
                   capture_output=True, timeout=300)
    first = _ok(doit(tmp_path / "ws1", "-v", "2", "export"))
    assert "started the tensorflow export server" in first.stderr
    pid = _pid(tmp_path / "ws1")
    second = _ok(doit(tmp_path / "ws2", "-v", "2", "export"))
    assert f"using the warm tensorflow export server (pid {pid})" in second.stderr
    assert "starting a tensorflow worker" not in first.stderr + second.stderr
    # Each job imported its own workspace's module, in a child forked for it.
    assert "common.util imported (WIDTH 2" in first.stdout and "WIDTH 5" not in first.stdout
    assert "common.util imported (WIDTH 5" in second.stdout and "WIDTH 2" not in second.stdout
    status = server_client.request_status(_paths())
    assert status is not None and status["pid"] == pid
    assert status["workspaces"] == {str(tmp_path / "ws1"): 1, str(tmp_path / "ws2"): 1}
    # The server itself never imported either workspace's code.
    assert status["workspace_modules"] == []
    # And each artifact is its own workspace's model.
    shapes = subprocess.run(
        [sys.executable, "-c", OUTPUT_WIDTH, *(str(tmp_path / n / "artifacts/p/e")
                                               for n in widths)],
        env=env, check=True, capture_output=True, text=True, timeout=300,
    )
    assert shapes.stdout.split() == ["2", "5"], shapes.stdout + shapes.stderr


def test_a_server_refuses_a_job_from_another_toolchain_and_retires(ws: Path) -> None:
    _ok(doit(ws, "export"))
    pid = _pid(ws)
    paths = _paths()
    job = JobRequest(ExportJob("//p1:e", "tensorflow", "lib.model:small", "tf_saved_model"),
                     str(ws / "unused"))
    with pytest.raises(server_client.ServerRefused, match="toolchain"):
        server_client.run(paths, ws, "0" * 64, 60.0, job, dict(os.environ))
    _wait(lambda: not _alive(pid), 30, "the refusing server to retire")
    assert not paths.socket.exists()


def test_kill_9_between_builds_leaves_a_stale_socket_that_the_next_build_replaces(
    ws: Path,
) -> None:
    _ok(doit(ws, "export"))
    old = _pid(ws)
    os.kill(old, signal.SIGKILL)
    _wait(lambda: not _alive(old), 30, "the killed server to die")
    assert _paths().socket.exists()

    model = ws / "lib/model.py"
    model.write_text(model.read_text() + "\n# edited\n")
    result = _ok(doit(ws, "export"))
    assert "started the tensorflow export server" in result.stderr
    assert "warning" not in result.stderr and "starting a tensorflow worker" not in result.stderr
    assert built_labels(result) == {"//p1:e", "//p2:e"}
    assert _pid(ws) != old and _alive(_pid(ws))


def test_kill_9_of_the_server_during_a_build_retries_on_a_worker_and_succeeds(
    ws: Path,
) -> None:
    _ok(doit(ws, "export"))
    server = _pid(ws)
    proc, child = _start_blocked_build(ws)
    assert f"PPid:\t{server}\n" in Path(f"/proc/{child}/status").read_text()
    os.kill(server, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "export server failed (it closed the connection while building //block:e" in err
    assert "starting a tensorflow worker" in err
    assert built_labels(subprocess.CompletedProcess([], 0, out, err)) == {"//block:e"}
    assert (ws / "artifacts/block/e/saved_model.pb").is_file()
    _wait(lambda: not _alive(child), 10, "the orphaned export to die with its server")


def test_killing_a_build_kills_its_export_but_not_the_server(ws: Path) -> None:
    _ok(doit(ws, "export"))
    server = _pid(ws)
    proc, child = _start_blocked_build(ws)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    _wait(lambda: not _alive(child), 10, "the server to kill the abandoned export")
    assert _alive(server)
    log = _paths().log.read_text()
    assert f"client of //block:e disconnected; killing pid {child}" in log
    # The second attempt of the factory does not block: the same server builds it.
    again = _ok(doit(ws, "//block:e"))
    assert f"using the warm tensorflow export server (pid {server})" in again.stderr
    assert built_labels(again) == {"//block:e"}


def test_two_workspaces_building_at_once_start_one_server_and_share_it(ws: Path) -> None:
    # The start lock lives beside the socket in the runtime folder, not in a workspace.
    other = ws.parent / "ws2"
    shutil.copytree(ws, other)
    procs = [_spawn(ws, "//p1:e"), _spawn(other, "//p2:e")]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
    errs = "".join(err for _, err in outputs)
    assert errs.count("started the tensorflow export server") == 1, errs
    assert errs.count("using the warm tensorflow export server") == 1, errs
    assert "starting a tensorflow worker" not in errs
    log = _paths().log.read_text()
    assert "//p1:e: ok" in log and "//p2:e: ok" in log
    assert f"{ws})" in log and f"{other})" in log


def test_a_server_that_cannot_start_falls_back_to_per_build_workers(
    ws: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "runtime").write_text("not a folder\n")
    monkeypatch.setenv("RULES_KERAS_RUNTIME_DIR", str(tmp_path / "runtime"))
    result = _ok(doit(ws, "export"))
    assert "the tensorflow export server is unavailable" in result.stderr
    assert "building with per-build workers" in result.stderr
    assert "starting a tensorflow worker" in result.stderr
    assert summary(result) == "2 built, 0 restored, 0 up to date, 0 failed"


@pytest.mark.parametrize("how", ["env", "pyproject"])
def test_opting_out_never_starts_a_server(ws: Path, how: str) -> None:
    env = {"RULES_KERAS_SERVER": "0"} if how == "env" else {}
    if how == "pyproject":
        (ws / "pyproject.toml").write_text("[tool.rules_keras]\nserver = false\n")
    result = _ok(doit(ws, "export", env=env))
    assert "export server" not in result.stderr
    assert "starting a tensorflow worker" in result.stderr
    assert servers_in(_paths().folder) == []
    status = _ok(doit(ws, "server_status", env=env))
    assert "the export server is off" in status.stdout


def test_server_status_and_server_stop_tasks(ws: Path) -> None:
    before = _ok(doit(ws, "server_status"))
    assert "no export server has run for this environment" in before.stdout
    _ok(doit(ws, "export"))
    pid = _pid(ws)
    status = _ok(doit(ws, "server_status"))
    assert f"tensorflow: running, pid {pid}" in status.stdout
    assert "1 jobs served" not in status.stdout and "2 jobs served" in status.stdout
    assert "toolchain: matches this environment" in status.stdout
    assert "jax: not running" in status.stdout
    assert " built, " not in status.stdout
    stop = _ok(doit(ws, "server_stop"))
    assert f"stopped the tensorflow export server (pid {pid})" in stop.stdout
    assert not _alive(pid)
    assert not _paths().socket.exists()
    after = _ok(doit(ws, "server_status"))
    assert "tensorflow: not running" in after.stdout
    again = _ok(doit(ws, "server_stop"))
    assert "no export server is running" in again.stdout


def test_exports_and_spares_leave_nothing_in_tmpdir(ws: Path, tmp_path: Path) -> None:
    # The children leave with os._exit (the server's exit handlers are not
    # theirs), yet their own handlers, such as autograph's, must still run.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    _ok(doit(ws, "export", env=env))
    paths = _paths()
    _wait(lambda: (server_client.request_status(paths) or {}).get("spare") == "ready", 60,
          "the spare to warm up")
    _ok(doit(ws, "server_stop", env=env))
    assert sorted(p.name for p in tmp.iterdir()) == []


def _add_targets(ws: Path, n: int) -> None:
    for i in range(n):
        write_tree(ws, {f"q{i:02d}/BUILD.py": HEADER + (
            'keras_model(name="m", factory="lib.model:small", weights="small.weights.h5")\n'
            'keras_export(name="e", model=":m")\n'
        )})
        shutil.copy(ws / "p1/small.weights.h5", ws / f"q{i:02d}/small.weights.h5")


def test_a_big_build_hands_over_to_per_build_workers(ws: Path) -> None:
    # A forked child pays the runtime's first use on every export; past
    # WORKERS_AFTER jobs, per-build workers (warmed in the background) are cheaper.
    # And a busy server makes no spare: its warm-up would compete with the jobs.
    first = _ok(doit(ws, "export"))
    assert "started the tensorflow export server" in first.stderr
    extra = WORKERS_AFTER + 8
    _add_targets(ws, extra)
    result = _ok(doit(ws, "-n", "2", "export"))
    assert summary(result) == f"{extra} built, 0 restored, 2 up to date, 0 failed"
    assert f"using the warm tensorflow export server (pid {_pid(ws)})" in result.stderr
    assert "starting a tensorflow worker" in result.stderr
    assert "warning" not in result.stderr
    # How many jobs the worker takes depends on when its import finishes.
    log = _paths().log.read_text()
    assert log.count(": ok in ") >= WORKERS_AFTER, log
    lines = log.splitlines()
    last_job = max(i for i, line in enumerate(lines) if ": ok in " in line)
    spare_before_build = max((i for i, line in enumerate(lines[:last_job])
                              if "//q" not in line and "spare pid" in line), default=-1)
    first_q = min(i for i, line in enumerate(lines) if "//q" in line)
    assert not any("spare pid" in line for line in lines[first_q:last_job]), log
    assert spare_before_build < first_q


def test_a_cold_build_of_many_targets_with_no_warm_server_uses_workers_alone(ws: Path) -> None:
    # Starting a server for it would cost a cold build this size more than it
    # saves (BENCHMARKS.md section 8): no server is started, and nothing warns.
    _add_targets(ws, COLD_BUILD)
    result = _ok(doit(ws, "-n", "2", "export"))
    assert summary(result) == f"{COLD_BUILD + 2} built, 0 restored, 0 up to date, 0 failed"
    assert (f"{COLD_BUILD + 2} tensorflow targets were never built with this toolchain and no "
            "export server is warm: building on per-build workers") in result.stderr
    assert "export server (pid" not in result.stderr and "warning" not in result.stderr
    assert "starting a tensorflow worker" in result.stderr
    assert servers_in(_paths().folder) == []
    # Once built, a change goes to a server again (started by that small build).
    model = ws / "lib/model.py"
    model.write_text(model.read_text().replace("VERSION = 1", "VERSION = 2"))
    again = _ok(doit(ws, "//p1:e", "//p2:e"))
    assert "started the tensorflow export server" in again.stderr
