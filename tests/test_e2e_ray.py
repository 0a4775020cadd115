"""End to end: the real `doit export` on a real two-node Ray cluster, with real TF exports.

One cluster for the module (tests/ray_cluster.py): a head and node "b" (the
custom resource node_b), each a `ray start --block` process, inside a private
network namespace where every address is 127.0.0.1; `doit` runs in the same
namespace. The node-failure test kills node b, so it runs last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import (
    EXAMPLE_TARGETS,
    TINY_MODELS,
    assert_artifacts_consistent,
    copy_examples,
    counts,
    read_manifests,
)
from tests.ray_cluster import NamespacedNginx, RayCluster, netns_available
from tests.servers import PASSWORD, USER
from tests.test_e2e_examples import CHECK_SCRIPT, EXPORTS

pytestmark = pytest.mark.e2e

MODEL = '''
"""Tiny models for the cluster tests; some wait or block, to stage a fault."""
import importlib
import os
import time
from pathlib import Path

MARKERS = Path({markers!r})
print(f"lib.model imported (node {{os.environ.get('RK_TEST_NODE', 'head or local')}})",
      flush=True)
''' + TINY_MODELS + '''

def broken():
    raise RuntimeError("factory is broken on purpose")


def reads_undeclared():
    """Reads a file its BUILD.py does not declare: found in a checkout, not on a node."""
    Path("undeclared/extra.txt").read_text()
    return small()


def imports_undeclared():
    """Imports a module no import statement names: the key does not cover it either."""
    importlib.import_module("undeclared_helper")
    return small()


def blocks_on_b():
    """Hangs on node b (until the node is killed); builds small() anywhere else."""
    if os.environ.get("RK_TEST_NODE") == "b":
        (MARKERS / "on_b.pid").write_text(str(os.getpid()))
        while True:
            time.sleep(1)
    return small()


def blocks():
    (MARKERS / "blocks.pid").write_text(str(os.getpid()))
    while True:
        time.sleep(1)


def waits_for_go():
    """Says it started, then waits until the test has edited an input."""
    (MARKERS / "waiting").write_text(str(os.getpid()))
    while not (MARKERS / "go").exists():
        time.sleep(0.1)
    return small()
'''
HEADER = "from rules import keras_export, keras_model\n"
WEIGHTS = """
import sys
sys.path.insert(0, ".")
from lib.model import small
small().save_weights("small.weights.h5")
"""


def _model(factory: str, **extra: str) -> str:
    args = "".join(f", {k}={v}" for k, v in extra.items())
    return (f'keras_model(name="m", factory="lib.model:{factory}", '
            f'weights="small.weights.h5"{args})\n')


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    if not netns_available():
        message = "the Ray tests need root and iproute2 to make a private network namespace"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    started = RayCluster(tmp_path_factory.mktemp("ray")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ray-template")
    root = base / "ws"
    markers = base / "markers"
    markers.mkdir()
    (root / "lib").mkdir(parents=True)
    (root / "lib/__init__.py").write_text("")
    (root / "lib/model.py").write_text(MODEL.format(markers=str(markers)))
    shutil.copy(Path(__file__).resolve().parents[1] / "dodo.py", root / "dodo.py")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-c", WEIGHTS], cwd=root, env=env, check=True,
                   capture_output=True, timeout=300)
    return root


def _workspace(template: Path, dest: Path, packages: Mapping[str, str],
               pyproject: str = "") -> Path:
    """A copy of the template with one BUILD.py (and the weights) per package."""
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for package, body in packages.items():
        (dest / package).mkdir(parents=True, exist_ok=True)
        (dest / package / "BUILD.py").write_text(HEADER + body)
        shutil.copy(template / "small.weights.h5", dest / package / "small.weights.h5")
    if pyproject:
        (dest / "pyproject.toml").write_text("[tool.rules_keras]\n" + pyproject)
    return dest


def _markers(template: Path) -> Path:
    return template.parent / "markers"


def ray_doit(cluster: RayCluster, ws: Path, *args: str,
             env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real doit, in the cluster's namespace, with executor = "ray" pointed at it."""
    return cluster.run([sys.executable, "-m", "doit", *args], cwd=ws, env=_env(cluster, ws, env))


def _env(cluster: RayCluster, ws: Path, env: Mapping[str, str] | None) -> dict[str, str]:
    return {
        "RULES_KERAS_EXECUTOR": "ray",
        "RULES_KERAS_RAY_ADDRESS": cluster.address,
        "RULES_KERAS_CACHE_DIR": str(ws.parent / f"{ws.name}-cache"),
        **(env or {}),
    }


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _node_ids(cluster: RayCluster) -> dict[str, str]:
    """Ray's node id of the head and of node b."""
    script = (f"import json, ray; ray.init(address={cluster.address!r}, logging_level='ERROR'); "
              "print(json.dumps({('b' if 'node_b' in n['Resources'] else 'head'): n['NodeID'] "
              "for n in ray.nodes() if n['Alive']}))")
    result = cluster.run([sys.executable, "-c", script], timeout=120)
    assert result.returncode == 0, result.stderr
    ids: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return ids


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _pid_alive(pid: int) -> bool:
    from rules.core.fsio import pid_alive

    return pid_alive(pid)


# -- the examples ----------------------------------------------------------------


def test_the_examples_build_on_the_cluster_and_pass_the_parity_check(
    cluster: RayCluster, tmp_path: Path
) -> None:
    ws = copy_examples(tmp_path / "examples")
    _ok(ray_doit(cluster, ws, "-n", "2", "export"))
    assert counts(ray_doit(cluster, ws, "export"))["up to date"] == EXAMPLE_TARGETS
    manifests = read_manifests(ws)
    assert len(manifests) == EXAMPLE_TARGETS
    for label, manifest in manifests.items():
        assert manifest["record"]["executor"] == "ray", label  # type: ignore[index]
    assert assert_artifacts_consistent(ws) == EXAMPLE_TARGETS
    for backend in ("tensorflow", "jax"):
        paths = [str(m["path"]) for label, m in manifests.items()
                 if label in EXPORTS and m["inputs"]["backend"] == backend]  # type: ignore[index]
        check = subprocess.run(
            [sys.executable, "-c", CHECK_SCRIPT, str(ws), json.dumps(paths)],
            capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": backend},
            timeout=600,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.count("OK ") == len(paths)


# -- uploads, placement, records ---------------------------------------------------------


@pytest.fixture(scope="module")
def three(cluster: RayCluster, template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three exports of one model, the third placed on node b; built once with -n 3."""
    ws = _workspace(template, tmp_path_factory.mktemp("three") / "ws", {"p": (
        _model("small")
        + 'keras_export(name="a", model=":m")\n'
        + 'keras_export(name="b", model=":m", tolerance=1e-4)\n'
        + 'keras_export(name="on_b", model=":m", tolerance=1e-3, resources={"node_b": 1})\n'
    )})
    output = _ok(ray_doit(cluster, ws, "-n", "3", "export"))
    assert "3 built" in output
    return ws


def test_three_exports_of_one_model_upload_its_weights_once(three: Path) -> None:
    report = json.loads((three / ".rules_keras/ray/last-build.json").read_text())
    weights = hashlib.sha256((three / "p/small.weights.h5").read_bytes()).hexdigest()
    code = hashlib.sha256((three / "lib/model.py").read_bytes()).hexdigest()
    assert report["uploads"][weights]["puts"] == 1
    assert report["uploads"][weights]["uses"] == 3
    assert report["uploads"][code]["puts"] == 1
    assert report["counts"] == {"ray": 3}
    assert all(blob["puts"] == 1 for blob in report["uploads"].values())


def test_a_target_that_needs_node_b_runs_on_node_b(cluster: RayCluster, three: Path) -> None:
    manifests = read_manifests(three)
    assert manifests["//p:on_b"]["record"]["node"]["id"] == _node_ids(cluster)["b"]  # type: ignore[index]
    # The resources are not part of what the action builds: same key as without.
    assert "resources" not in manifests["//p:on_b"]["inputs"]["attrs"]  # type: ignore[index]


def test_every_manifest_records_the_executor_and_the_node(cluster: RayCluster,
                                                         three: Path) -> None:
    ids = set(_node_ids(cluster).values())
    for label, manifest in read_manifests(three).items():
        record = manifest["record"]
        assert record["executor"] == "ray", label  # type: ignore[index]
        assert record["node"]["id"] in ids, label  # type: ignore[index]
        assert record["node"]["ip"] == "127.0.0.1", label  # type: ignore[index]


# -- remote-execution semantics --------------------------------------------------------


def test_an_undeclared_input_is_missing_on_the_node(
    cluster: RayCluster, template: Path, tmp_path: Path
) -> None:
    """Both exist in the checkout doit runs in (and Ray puts its folder on its workers'
    sys.path); neither is declared, so neither exists where the export runs."""
    ws = _workspace(template, tmp_path / "ws", {
        "undeclared": _model("reads_undeclared") + 'keras_export(name="e", model=":m")\n',
        "dynamic": _model("imports_undeclared") + 'keras_export(name="e", model=":m")\n',
    })
    (ws / "undeclared/extra.txt").write_text("read from the checkout")
    (ws / "undeclared_helper.py").write_text("VALUE = 1\n")
    result = ray_doit(cluster, ws, "--continue", "export")
    assert result.returncode != 0
    assert "FileNotFoundError" in result.stdout and "undeclared/extra.txt" in result.stdout
    assert "No module named 'undeclared_helper'" in result.stdout
    assert "0 built" in result.stdout
    # Declared, it travels with the action.
    (ws / "undeclared/BUILD.py").write_text(HEADER + _model(
        "reads_undeclared", data='["extra.txt"]') + 'keras_export(name="e", model=":m")\n')
    _ok(ray_doit(cluster, ws, "//undeclared:e"))
    assert read_manifests(ws)["//undeclared:e"]["record"]["executor"] == "ray"  # type: ignore[index]


def test_a_user_error_fails_the_target_as_a_local_build_does(
    cluster: RayCluster, template: Path, tmp_path: Path
) -> None:
    ws = _workspace(template, tmp_path / "ws", {
        "bad": _model("broken") + 'keras_export(name="e", model=":m")\n',
    })
    remote = ray_doit(cluster, ws, "export")
    local = ray_doit(cluster, ws, "export", env={"RULES_KERAS_EXECUTOR": "local"})
    assert remote.returncode != 0 and local.returncode != 0

    def failure(out: str) -> str:
        # From the error's headline to the counts line: the timings around it differ.
        start = out.index("    //bad:e: ")
        return out[start:out.index("\n0 built, ", start)]

    assert failure(remote.stdout) == failure(local.stdout)
    assert 'raise RuntimeError("factory is broken on purpose")' in remote.stdout
    assert f'File "{ws}/lib/model.py"' in remote.stdout
    # Not retried: the model code ran once.
    assert remote.stdout.count("lib.model imported") == 1


def test_inputs_changed_during_a_remote_run_are_published_but_not_cached(
    cluster: RayCluster, template: Path, tmp_path: Path
) -> None:
    markers = _markers(template)
    for name in ("waiting", "go"):
        (markers / name).unlink(missing_ok=True)
    ws = _workspace(template, tmp_path / "ws", {
        "edit": _model("waits_for_go") + 'keras_export(name="e", model=":m")\n',
    })
    process = cluster.popen([sys.executable, "-m", "doit", "export"], cwd=ws,
                            env=_env(cluster, ws, None))
    try:
        _wait_for(lambda: (markers / "waiting").exists(), 300, "the remote job to start")
        weights = ws / "edit/small.weights.h5"
        weights.write_bytes(weights.read_bytes() + b"\0")
        (markers / "go").write_text("")
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, stdout + stderr
    assert "inputs changed during the build; not cached" in stderr
    manifest = read_manifests(ws)["//edit:e"]
    assert manifest["record"]["executor"] == "ray"  # type: ignore[index]
    assert list((ws.parent / "ws-cache").glob("ac/*/*")) == []


def test_a_remote_build_is_uploaded_to_the_remote_cache_as_a_local_one_is(
    cluster: RayCluster, template: Path, tmp_path: Path
) -> None:
    nginx = NamespacedNginx(cluster, tmp_path / "nginx")
    nginx.start()
    try:
        ws = _workspace(template, tmp_path / "ws", {
            "up": _model("small") + 'keras_export(name="e", model=":m")\n',
        })
        _ok(ray_doit(cluster, ws, "export", env={
            "RULES_KERAS_REMOTE_CACHE": nginx.url, "RULES_KERAS_REMOTE_UPLOAD": "1",
            "RULES_KERAS_REMOTE_USER": USER, "RULES_KERAS_REMOTE_PASSWORD": PASSWORD,
        }))
        manifest = read_manifests(ws)["//up:e"]
        assert manifest["record"]["executor"] == "ray"  # type: ignore[index]
        stored = {p.name for p in nginx.root.glob("cas/*/*")} | {p.name for p in
                                                                nginx.root.glob("cas/*")}
        for _path, sha, _size, _mode in manifest["files"]:  # type: ignore[union-attr]
            assert sha in stored
        assert list(nginx.root.glob("ac/**/" + str(manifest["key"])))
    finally:
        nginx.stop()


# -- toolchain, reachability, interruption ----------------------------------------------


def test_a_node_with_another_toolchain_refuses_and_the_build_runs_locally(
    cluster: RayCluster, template: Path, tmp_path: Path
) -> None:
    # TF_DETERMINISTIC_OPS changes numerics, so it is in the fingerprint; set
    # on the nodes only, through Ray's runtime_env.
    ws = _workspace(template, tmp_path / "ws", {"p": (
        _model("small") + 'keras_export(name="a", model=":m")\n'
        + 'keras_export(name="b", model=":m", tolerance=1e-4)\n'
    )}, pyproject='ray_runtime_env = {env_vars = {TF_DETERMINISTIC_OPS = "1"}}\n')
    result = ray_doit(cluster, ws, "-n", "2", "export")
    _ok(result)
    assert "2 built" in result.stdout
    refused = [line for line in result.stderr.splitlines() if "refused" in line]
    assert len(refused) == 1, result.stderr
    assert "TF_DETERMINISTIC_OPS: unset for the action, '1' on the node" in refused[0]
    assert refused[0].count("fingerprint") == 1 and " here, " in refused[0]
    for label, manifest in read_manifests(ws).items():
        assert manifest["record"]["executor"] == "local", label  # type: ignore[index]
    # The setting that makes it an error instead.
    shutil.rmtree(ws / "artifacts")
    strict = ray_doit(cluster, ws, "export", env={
        "RULES_KERAS_RAY_TOOLCHAIN_MISMATCH": "error", "RULES_KERAS_CACHE": "0"})
    assert strict.returncode != 0
    assert "refused //p:a: its toolchain differs" in strict.stdout
    assert not (ws / "artifacts/p/a").exists()


def test_an_unreachable_cluster_costs_one_warning_and_a_local_build(
    cluster: RayCluster, template: Path, tmp_path: Path
) -> None:
    ws = _workspace(template, tmp_path / "ws", {"p": (
        _model("small") + 'keras_export(name="a", model=":m")\n'
        + 'keras_export(name="b", model=":m", tolerance=1e-4)\n'
    )})
    # A cluster that was stopped: nothing listens at its address.
    started = time.monotonic()
    result = ray_doit(cluster, ws, "-n", "2", "export",
                      env={"RULES_KERAS_RAY_ADDRESS": "127.0.0.1:6390"})
    _ok(result)
    assert time.monotonic() - started < 120
    assert result.stderr.count("unreachable") == 1, result.stderr
    assert "2 built" in result.stdout
    for manifest in read_manifests(ws).values():
        record = manifest["record"]
        assert record["executor"] == "local"  # type: ignore[index]
        assert record["node"] == {"hostname": socket.gethostname()}  # type: ignore[index]


def test_ctrl_c_cancels_the_remote_action(
    cluster: RayCluster, template: Path, tmp_path: Path
) -> None:
    pid_file = _markers(template) / "blocks.pid"
    pid_file.unlink(missing_ok=True)
    ws = _workspace(template, tmp_path / "ws", {
        "hang": _model("blocks") + 'keras_export(name="e", model=":m")\n',
    })
    process = cluster.popen([sys.executable, "-m", "doit", "export"], cwd=ws,
                            env=_env(cluster, ws, None))
    try:
        _wait_for(pid_file.exists, 300, "the remote export to start")
        _wait_for(lambda: pid_file.read_text().strip() != "", 10, "its pid")
        export = int(pid_file.read_text())
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    finally:
        process.kill()
    _wait_for(lambda: not _pid_alive(export), 30, "the export process on the node to end")


def test_a_task_with_gpus_runs_its_job_in_a_fresh_worker_process(
    template: Path, tmp_path: Path
) -> None:
    """The path a GPU task takes (none here to schedule one): a worker of its own."""
    from rules.core.job import ExportJob
    from rules.execution.protocol import JobRequest, JobResult
    from rules.execution.ray.node import run_fresh
    from rules.execution.ray.wire import NodeInfo, RemoteAction

    ws = tmp_path / "ws"
    shutil.copytree(template, ws, ignore=shutil.ignore_patterns("__pycache__"))
    job = ExportJob("//p:e", "tensorflow", "lib.model:small", "tf_saved_model",
                    weights="small.weights.h5")
    action = RemoteAction("//p:e", job.to_wire(), (), {}, (), "", "e", "env", 60.0)
    out = tmp_path / "out" / "e"
    out.parent.mkdir()
    result = run_fresh(action, NodeInfo("id", "127.0.0.1", "here"), JobRequest(job, str(out)), ws)
    assert isinstance(result, JobResult) and result.ok, result
    assert (out / "saved_model.pb").is_file()


def test_a_node_killed_mid_action_is_retried_elsewhere_and_the_build_succeeds(
    cluster: RayCluster, template: Path, tmp_path: Path
) -> None:
    """Runs last: node b stays dead."""
    pid_file = _markers(template) / "on_b.pid"
    pid_file.unlink(missing_ok=True)
    ws = _workspace(template, tmp_path / "ws", {
        "x": _model("blocks_on_b") + 'keras_export(name="e", model=":m")\n',
        "y": _model("blocks_on_b") + 'keras_export(name="e", model=":m")\n',
    })
    ids = _node_ids(cluster)
    process = cluster.popen([sys.executable, "-m", "doit", "-n", "2", "export"], cwd=ws,
                            env=_env(cluster, ws, None))
    try:
        _wait_for(pid_file.exists, 300, "an export to start on node b")
        cluster.kill_node("b")
        stdout, stderr = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, stdout + stderr
    assert "2 built" in stdout
    # Ray ran the action again on the head; neither was built locally.
    for label, manifest in read_manifests(ws).items():
        record = manifest["record"]
        assert record["executor"] == "ray", label  # type: ignore[index]
        assert record["node"]["id"] == ids["head"], label  # type: ignore[index]

