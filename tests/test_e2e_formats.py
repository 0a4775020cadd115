"""End to end: every export format, each artifact re-checked in its runtime in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import built_labels, copy_workspace, doit, read_manifests

pytestmark = pytest.mark.e2e

# The examples' exports other than SavedModels: label -> (format, backend, runtime).
FORMAT_EXPORTS = {
    "//models/mnist:mnist_onnx": ("onnx", "tensorflow", "ONNX Runtime"),
    "//models/mnist:mnist_litert": ("litert", "tensorflow", "LiteRT interpreter"),
    "//models/jax_regressor:jax_regressor_onnx": ("onnx", "jax", "ONNX Runtime"),
}

# Rebuilds each Keras model from its factory and weights and runs the artifact
# in its runtime, written out here rather than through rules' own helpers, so
# it checks the artifact and not the code that checked it first.
RECHECK = r"""
import json, sys
from pathlib import Path
import numpy as np
root = Path(sys.argv[1]); manifests = json.loads(sys.argv[2])
sys.path.insert(0, str(root))
import keras
from rules.core.specs import tree_from_json
from rules.execution.verify import sample, max_abs_diff
for mpath in manifests:
    m = json.loads(Path(mpath).read_text())
    art = mpath[: -len(".manifest.json")]
    module, fn = m["inputs"]["attrs"]["factory"].split(":")
    model = getattr(__import__(module, fromlist=[fn]), fn)()
    weights = [p for p in m["inputs"]["files"] if p.endswith((".weights.h5", ".keras"))]
    model.load_weights(str(root / weights[0]))
    ep = m["record"]["endpoints"][0]
    args = [sample(tree_from_json(t), np.random.default_rng(0)) for t in ep["inputs"]]
    flat = keras.tree.flatten(args)
    fmt = m["record"]["format"]
    if fmt == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(art, providers=["CPUExecutionProvider"])
        got = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), flat)})
    elif fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=art)
        names = interpreter.get_signature_list()["serving_default"]["inputs"]
        got = list(interpreter.get_signature_runner()(**dict(zip(names, flat))).values())
    else:
        import openvino
        compiled = openvino.Core().compile_model(
            art + "/model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        )
        result = compiled(flat)
        got = [result[port] for port in compiled.outputs]
    diff = max_abs_diff(model(*args, training=False), got)
    tolerance = m["record"]["verification"]["tolerance"]
    assert diff <= tolerance, (m["label"], diff, tolerance)
    print("OK", m["label"], diff)
"""


def _recheck(ws: Path, backend: str, paths: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RECHECK, str(ws), json.dumps(paths)],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": backend},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("OK ") == len(paths), result.stdout


def test_examples_are_exported_in_three_formats_each_checked_in_its_runtime(
    built_examples: Path,
) -> None:
    manifests = read_manifests(built_examples)
    exports = {k: m for k, m in manifests.items() if m["kind"] == "keras_export"}
    formats = {m["record"]["format"] for m in exports.values()}  # type: ignore[index]
    assert formats >= {"tf_saved_model", "onnx", "litert"}
    for label, (fmt, backend, runtime) in FORMAT_EXPORTS.items():
        record = manifests[label]["record"]
        assert (record["format"], record["backend"]) == (fmt, backend)  # type: ignore[index]
        check = record["verification"]  # type: ignore[index]
        assert check["passed"] is True and check["runtime"].startswith(runtime)
        assert check["checks"][0]["sample_seed"] == 0
        assert check["checks"][0]["max_abs_diff"] <= check["tolerance"]
        # The converter and runtime versions are part of what the artifact depends on.
        assert "onnxruntime" in manifests[label]["inputs"]["format_tools"] or fmt == "litert"  # type: ignore[index]
    assert manifests["//models/mnist:mnist_onnx"]["record"]["opset"] == 17  # type: ignore[index]
    assert (built_examples / "artifacts/models/mnist/mnist_litert.tflite").is_file()
    assert (built_examples / "artifacts/models/mnist/mnist_onnx.onnx").is_file()
    for backend in ("tensorflow", "jax"):
        paths = [
            str(manifests[label]["path"])
            for label, (_, b, _) in FORMAT_EXPORTS.items()
            if b == backend
        ]
        _recheck(built_examples, backend, paths)


def test_saved_model_cli_shows_every_saved_model(built_examples: Path) -> None:
    cli = Path(sys.executable).with_name("saved_model_cli")
    assert cli.is_file(), f"saved_model_cli ships with tensorflow; not found at {cli}"
    saved_models = sorted(
        p.parent for p in (built_examples / "artifacts").rglob("saved_model.pb")
    )
    assert len(saved_models) == 5
    # All at once: each one imports TensorFlow, which is most of its time.
    procs = [
        (path, subprocess.Popen(
            [str(cli), "show", "--all", "--dir", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
        for path in saved_models
    ]
    for path, proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{path}:\n{out}\n{err}"
        assert "signature_def['serving_default']" in out, path


EXTRA_MNIST_TARGETS = """
keras_export(
    name="mnist_openvino",
    model=":mnist",
    format="openvino",
)

keras_export(
    name="mnist_litert_exact",
    model=":mnist",
    format="litert",
    format_options={"optimizations": ["DEFAULT"], "target_spec": {"supported_types": ["float16"]}},
    tolerance=0.0,
)
"""


def test_openvino_export_and_a_runtime_mismatch_fails_its_target(
    built_examples: Path, tmp_path: Path
) -> None:
    ws = copy_workspace(built_examples, tmp_path / "ws")
    build = ws / "models/mnist/BUILD.py"
    build.write_text(build.read_text() + EXTRA_MNIST_TARGETS)
    result = doit(ws, "--continue", "export")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert built_labels(result) == {"//models/mnist:mnist_openvino"}
    assert (
        "//models/mnist:mnist_litert_exact: the litert artifact, run in LiteRT interpreter"
        in out
    )
    assert "differs from Keras: max abs diff" in out and "> tolerance 0" in out
    assert not (ws / "artifacts/models/mnist/mnist_litert_exact.tflite").exists()

    art = ws / "artifacts/models/mnist/mnist_openvino"
    assert sorted(p.name for p in art.iterdir()) == ["model.bin", "model.xml"]
    manifest = read_manifests(ws)["//models/mnist:mnist_openvino"]
    check = manifest["record"]["verification"]  # type: ignore[index]
    assert check["passed"] and check["runtime"].startswith("OpenVINO Runtime")
    _recheck(ws, "tensorflow", [str(manifest["path"])])


def test_litert_from_jax_is_rejected_before_any_worker_starts(
    built_examples: Path, tmp_path: Path
) -> None:
    ws = copy_workspace(built_examples, tmp_path / "ws")
    build = ws / "models/jax_regressor/BUILD.py"
    build.write_text(
        build.read_text()
        + '\nkeras_export(name="jax_regressor_litert", model=":jax_regressor", format="litert")\n'
    )
    result = doit(ws, "//models/jax_regressor:jax_regressor_litert")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert (
        "//models/jax_regressor:jax_regressor_litert: format 'litert' cannot be exported from "
        "the 'jax' backend of //models/jax_regressor:jax_regressor; it supports ['tensorflow']"
    ) in out
    assert "starting a" not in result.stderr


# Distributions of the onnx extra, as top-level names in site-packages.
ONNX_EXTRA = ("onnx", "onnxruntime", "onnx_ir", "tf2onnx", "jax2onnx")


def _venv_without_onnx(tmp_path: Path) -> str:
    """A real virtualenv that has everything the test run has except the onnx extra.

    Installing TensorFlow into a fresh venv takes minutes; instead the new venv
    sees the current site-packages through a folder of symlinks that leaves the
    onnx extra's packages (and their metadata) out.
    """
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp_path / "site"
    farm.mkdir()
    for entry in site.iterdir():
        top = entry.name.split("-")[0].split(".")[0].lower()
        if top not in ONNX_EXTRA:
            (farm / entry.name).symlink_to(entry)
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300
    )
    python = venv / "bin" / "python"
    probe = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    # addsitedir, not a plain path line: it also runs the .pth files there,
    # among them the one of the editable rules_keras install.
    pth = Path(probe.stdout.strip(), "farm.pth")
    pth.write_text(f"import site; site.addsitedir({str(farm)!r})\n")
    return str(python)


def test_missing_extra_names_the_extra_before_any_worker_starts(
    built_examples: Path, tmp_path: Path
) -> None:
    python = _venv_without_onnx(tmp_path)
    check = subprocess.run(
        [python, "-c", "import importlib.util as u; import keras, rules; "
         "print(u.find_spec('onnxruntime'), u.find_spec('tf2onnx'))"],
        capture_output=True, text=True, timeout=300,
    )
    assert check.stdout.strip() == "None None", check.stdout + check.stderr
    ws = copy_workspace(built_examples, tmp_path / "ws")
    result = doit(
        ws, "//models/mnist:mnist_onnx", python=python, env={"RULES_KERAS_CACHE": "0"}
    )
    assert result.returncode != 0
    assert (
        "//models/mnist:mnist_onnx: format 'onnx' needs tf2onnx and onnxruntime; "
        "pip install 'rules-keras[onnx]'"
    ) in result.stdout + result.stderr
    assert "starting a" not in result.stderr
