"""Unit tests for remote execution on Ray: settings, resources, uploads, output checks.

None of these needs a cluster (tests/test_e2e_ray.py has a real one); they
pin the pieces whose mistakes would be silent there: a resource that enters
the key, a blob put twice, an output accepted with the wrong digest.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from workspace_helpers import failures, graph, write, write_build

from rules import config
from rules.analysis.action_key import compute
from rules.analysis.imports import ImportScanner
from rules.core.digests import DigestCache
from rules.core.errors import CacheError
from rules.core.frozen import FrozenMap
from rules.core.fsio import DigestMismatch
from rules.core.settings import ConfigError
from rules.core.toolchain import Toolchain
from rules.execution.ray.blobs import BlobUploads
from rules.execution.ray.config import RayConfig, demands, fits, task_options, unreachable
from rules.execution.ray.executor import RayExecutor
from rules.execution.ray.node import materialise
from rules.execution.ray.outputs import unpack
from rules.execution.ray.wire import NodeInfo, NodeReport, OutputFile, toolchain_differences

REPO = Path(__file__).resolve().parents[1]
NODE = NodeInfo("ab" * 28, "10.0.0.7", "node-7")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- settings --------------------------------------------------------------------


def _settings(tmp_path: Path, table: str = "", **env: str) -> config.Settings:
    (tmp_path / "pyproject.toml").write_text("[tool.rules_keras]\n" + table)
    return config.load(tmp_path, env)


def test_executor_is_local_unless_ray_is_chosen(tmp_path: Path) -> None:
    assert _settings(tmp_path).ray is None
    ray = _settings(tmp_path, RULES_KERAS_EXECUTOR="ray").ray
    assert ray == RayConfig(address="auto", idle_timeout=900.0)


def test_the_address_comes_from_our_variable_then_rays_then_the_file(tmp_path: Path) -> None:
    table = 'executor = "ray"\nray_address = "file:1"\n'
    assert _settings(tmp_path, table).ray.address == "file:1"  # type: ignore[union-attr]
    assert _settings(tmp_path, table, RAY_ADDRESS="ray:2").ray.address == "ray:2"  # type: ignore[union-attr]
    ours = _settings(tmp_path, table, RAY_ADDRESS="ray:2", RULES_KERAS_RAY_ADDRESS="ours:3")
    assert ours.ray.address == "ours:3"  # type: ignore[union-attr]


def test_runtime_env_and_mismatch_policy_are_read_from_the_file(tmp_path: Path) -> None:
    table = ('executor = "ray"\nray_toolchain_mismatch = "error"\n'
             'ray_runtime_env = {env_vars = {TF_DETERMINISTIC_OPS = "1"}, pip = ["x==1"]}\n')
    ray = _settings(tmp_path, table, RULES_KERAS_SERVER_IDLE_TIMEOUT="30").ray
    assert ray is not None
    assert ray.on_mismatch == "error"
    assert ray.runtime_env.thaw() == {"env_vars": {"TF_DETERMINISTIC_OPS": "1"}, "pip": ["x==1"]}
    assert ray.idle_timeout == 30.0
    other = _settings(tmp_path, 'executor = "ray"\n').ray
    assert other is not None and other.env_id != ray.env_id


@pytest.mark.parametrize(
    ("table", "env", "message"),
    [
        ("", {"RULES_KERAS_EXECUTOR": "rey"},
         r"RULES_KERAS_EXECUTOR must be one of \['local', 'ray'\].*Did you mean 'ray'"),
        ('executor = "cluster"\n', {}, r"executor must be one of \['local', 'ray'\]"),
        ('ray_runtime_env = "pip"\n', {}, "ray_runtime_env must be a table"),
        ("", {"RULES_KERAS_RAY_TOOLCHAIN_MISMATCH": "warn"},
         r"must be one of \['local', 'error'\]"),
    ],
)
def test_bad_ray_settings_name_the_setting(
    tmp_path: Path, table: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings(tmp_path, table, **env)


# -- the resources attribute -------------------------------------------------------------


MODEL = 'keras_model(name="m", factory="lib.model:build", weights="m.weights.h5"{extra})\n'


def _resource_workspace(root: Path, model: str = "", export: str = "") -> Path:
    write(root, "lib/__init__.py", "")
    write(root, "lib/model.py", "def build():\n    pass\n")
    write(root, "p/m.weights.h5", b"weights")
    write_build(root, "p", MODEL.format(extra=model)
                + f'keras_export(name="e", model=":m"{export})\n'
                + 'keras_export(name="plain", model=":m")\n')
    return root


def test_resources_merge_the_models_with_the_exports_own(tmp_path: Path) -> None:
    root = _resource_workspace(tmp_path, model=', resources={"num_cpus": 2, "memory": "1G"}',
                               export=', resources={"num_cpus": 4, "node_b": 1}')
    actions = {str(a.label): a for a in graph(root).actions}
    assert actions["//p:e"].resources == FrozenMap(
        {"num_cpus": 4, "memory": 1 << 30, "node_b": 1})
    assert actions["//p:plain"].resources == FrozenMap({"num_cpus": 2, "memory": 1 << 30})


def test_resources_do_not_enter_the_action_key(tmp_path: Path) -> None:
    toolchain = Toolchain("CPython 3.11.7", (("keras", "keras==3.10.0"),), ())
    keys = []
    for i, resources in enumerate(("", ', resources={"num_gpus": 1, "memory": "16G"}')):
        root = _resource_workspace(tmp_path / str(i), export=resources)
        digests = DigestCache(root / "digests.json")
        scanner = ImportScanner(root, digests, root / "imports.json")
        action = next(a for a in graph(root).actions if str(a.label) == "//p:e")
        assert bool(action.resources) == bool(resources)
        keys.append(compute(action, root, digests, scanner, toolchain).digest)
    assert keys[0] == keys[1]


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ('"2 cpus"', "attribute 'resources' must be a dict"),
        ('{"num_cpus": -1}', r"resources\['num_cpus'\] must be a number >= 0. Received: -1"),
        ('{"num_gpus": True}', r"resources\['num_gpus'\] must be a number >= 0"),
        ('{"num_cpus": 1.5}', "must be a whole number when above 1"),
        ('{"memory": "lots"}', r"resources\['memory'\]: expected a size like '10G'"),
        ('{"num_cpu": 2}', "no built-in 'num_cpu'. Did you mean 'num_cpus'"),
        ('{"CPU": 2}', r"resources\['CPU'\]: say 'num_cpus'"),
        ('{"gpus": 1}', r"resources\['gpus'\]: say 'num_gpus'"),
        ('{"node_b": "one"}', r"resources\['node_b'\] must be a number >= 0"),
    ],
)
def test_bad_resources_name_the_target_and_the_attribute(
    tmp_path: Path, resources: str, message: str
) -> None:
    root = _resource_workspace(tmp_path, export=f", resources={resources}")
    found = failures(graph(root))
    assert "//p:e" in found
    assert "//p:e" in found["//p:e"]
    assert re.search(message, found["//p:e"]), found["//p:e"]


def test_resources_become_ray_scheduling_options() -> None:
    resources = FrozenMap({"num_cpus": 2, "num_gpus": 1, "memory": 1 << 30, "node_b": 1})
    options = task_options(resources)
    assert options == {"num_cpus": 2, "num_gpus": 1, "memory": 1 << 30,
                       "resources": {"node_b": 1.0}}
    needs = demands(options)
    assert needs == {"CPU": 2.0, "GPU": 1.0, "memory": float(1 << 30), "node_b": 1.0}
    assert fits(needs, {"CPU": 8, "GPU": 1, "memory": 1 << 34, "node_b": 1})
    assert not fits(needs, {"CPU": 8, "GPU": 1, "memory": 1 << 34})
    assert demands(task_options(FrozenMap())) == {"CPU": 1.0}


# -- toolchain -------------------------------------------------------------------------


def test_toolchain_differences_name_each_entry_with_both_values() -> None:
    wanted = {"python": "CPython 3.11.7", "keras": "keras==3.15.0"}
    have = {"python": "CPython 3.11.7", "keras": "keras==3.16.0", "TF_DETERMINISTIC_OPS": "1"}
    assert toolchain_differences(wanted, have) == [
        "TF_DETERMINISTIC_OPS: unset for the action, '1' on the node",
        "keras: 'keras==3.15.0' for the action, 'keras==3.16.0' on the node",
    ]
    assert toolchain_differences(wanted, dict(wanted)) == []


# -- uploads -----------------------------------------------------------------------------


class _Puts:
    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, data: bytes) -> str:
        self.calls.append(data)
        return f"ref-{len(self.calls)}"


def test_each_blob_is_put_once_whatever_the_number_of_actions(tmp_path: Path) -> None:
    weights = write(tmp_path, "p/w.weights.h5", b"weights")
    write(tmp_path, "lib/model.py", "code")
    puts = _Puts()
    uploads = BlobUploads(tmp_path, puts)
    inputs = {"p/w.weights.h5": _sha(b"weights"), "lib/model.py": _sha(b"code")}
    for _ in range(3):
        paths, refs = uploads.refs(inputs)
        assert paths == inputs
        assert set(refs) == set(inputs.values())
    assert sorted(puts.calls) == [b"code", b"weights"]
    report = uploads.report()
    assert report[_sha(b"weights")] == {"size": 7, "puts": 1, "uses": 3,
                                        "paths": ["p/w.weights.h5"]}
    assert uploads.bytes_put == len(b"weights") + len(b"code")
    assert weights.read_bytes() == b"weights"


def test_a_file_changed_since_the_key_travels_under_its_new_digest(tmp_path: Path) -> None:
    write(tmp_path, "p/w.weights.h5", b"edited")
    uploads = BlobUploads(tmp_path, _Puts())
    paths, refs = uploads.refs({"p/w.weights.h5": _sha(b"original")})
    assert paths == {"p/w.weights.h5": _sha(b"edited")}
    assert list(refs) == [_sha(b"edited")]


# -- materialising inputs and accepting outputs -----------------------------------------


def test_materialise_writes_exactly_the_inputs_and_checks_each_digest(tmp_path: Path) -> None:
    inputs = (("lib/model.py", _sha(b"code")), ("p/w.h5", _sha(b"w")))
    materialise(tmp_path / "ws", inputs, {_sha(b"code"): b"code", _sha(b"w"): b"w"})
    assert sorted(str(p.relative_to(tmp_path / "ws")) for p in (tmp_path / "ws").rglob("*")
                  if p.is_file()) == ["lib/model.py", "p/w.h5"]
    with pytest.raises(DigestMismatch):
        materialise(tmp_path / "bad", (("a.py", _sha(b"a")),), {_sha(b"a"): b"tampered"})
    with pytest.raises(CacheError, match=r"'\.\.' component"):
        materialise(tmp_path / "escape", (("../x.py", _sha(b"a")),), {_sha(b"a"): b"a"})


def _report(files: tuple[OutputFile, ...], kind: Any = "directory",
            dirs: tuple[str, ...] = ()) -> NodeReport:
    return NodeReport("done", NODE, {"ok": True}, kind, files, dirs)


def test_outputs_are_written_only_when_every_digest_matches(tmp_path: Path) -> None:
    good = (OutputFile("saved_model.pb", _sha(b"pb"), 0o644, b"pb"),
            OutputFile("variables/variables.index", _sha(b"ix"), 0o600, b"ix"))
    unpack(_report(good, dirs=("assets",)), tmp_path / "ok")
    assert (tmp_path / "ok/variables/variables.index").read_bytes() == b"ix"
    assert (tmp_path / "ok/assets").is_dir()
    assert (tmp_path / "ok/variables/variables.index").stat().st_mode & 0o777 == 0o600
    lying = (OutputFile("saved_model.pb", _sha(b"pb"), 0o644, b"not pb"),)
    with pytest.raises(DigestMismatch):
        unpack(_report(lying), tmp_path / "lying")
    assert not (tmp_path / "lying/saved_model.pb").exists()
    escaping = (OutputFile("../../evil", _sha(b"x"), 0o644, b"x"),)
    with pytest.raises(CacheError):
        unpack(_report(escaping), tmp_path / "escaping")
    single = (OutputFile("m.tflite", _sha(b"tfl"), 0o644, b"tfl"),)
    unpack(_report(single, "file"), tmp_path / "m.tflite")
    assert (tmp_path / "m.tflite").read_bytes() == b"tfl"


# -- reaching the cluster ---------------------------------------------------------------


def test_an_unreachable_address_is_found_without_ray(tmp_path: Path) -> None:
    assert unreachable("auto", 1.0) == ""
    assert "expected host:port" in unreachable("nonsense", 1.0)
    assert "ConnectionRefused" in unreachable("127.0.0.1:1", 1.0)
    assert "ConnectionRefused" in unreachable("ray://127.0.0.1:1", 1.0)


def test_an_unreachable_cluster_warns_once_and_every_action_builds_locally(
    tmp_path: Path,
) -> None:
    from rules.core.job import ExportJob
    from rules.execution.protocol import JobRequest

    notices: list[str] = []
    executor = RayExecutor(tmp_path, tmp_path / ".rules_keras",
                           RayConfig(address="127.0.0.1:1"), notices.append,
                           lambda label, message: None)
    job = ExportJob("//p:e", "tensorflow", "lib.model:build", "tf_saved_model")
    for _ in range(3):
        assert executor.run(JobRequest(job, str(tmp_path / "out")), {}, FrozenMap()) is None
    executor.close()
    assert len(notices) == 1 and "unreachable" in notices[0]


def test_only_a_build_with_executor_ray_that_runs_an_action_imports_ray(tmp_path: Path) -> None:
    """A local build, a no-op and `doit list` must not pay for importing ray."""
    write(tmp_path, "pyproject.toml", '[tool.rules_keras]\nexecutor = "ray"\n')
    script = textwrap.dedent("""\
        import sys
        from pathlib import Path
        from rules.build import BuildSession
        session = BuildSession(Path(sys.argv[1]))
        assert session.remote is not None
        session.close()
        print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
    """)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                                 "RULES_KERAS_CACHE": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
