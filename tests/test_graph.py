"""Tests for rules.analysis.graph: resolving targets into actions and reporting failures."""

from __future__ import annotations

from pathlib import Path

from workspace_helpers import (
    REPO,
    action_labels,
    failures,
    graph,
    line_of,
    model_package,
    write,
    write_build,
)

from rules.analysis.action_key import code_modules
from rules.analysis.graph import Policy, analyse
from rules.core.job import ExportJob
from rules.loading.build_files import load_workspace
from rules.loading.labels import Label


def _files(root: Path, *rels: str) -> None:
    for rel in rels:
        write(root, rel, "x")


def test_a_healthy_package_gives_ordered_actions(tmp_path: Path) -> None:
    model_package(tmp_path)
    result = graph(tmp_path)
    assert result.failures == ()
    assert action_labels(result) == ["//m:serve", "//m:w"]
    serve, train = result.actions
    assert train.kind == "keras_train" and train.output == "artifacts/m/w.weights.h5"
    assert train.inputs == ("m/vocab.txt",) and train.deps == () and train.weights is None
    assert serve.kind == "keras_export" and serve.output == "artifacts/m/serve"
    assert serve.deps == (Label("m", "w"),)
    assert serve.weights == "artifacts/m/w.weights.h5"
    assert serve.inputs == ("artifacts/m/w.weights.h5",)
    assert serve.factory == "m.model:build" and serve.backend == "tensorflow"
    assert serve.model is not None and serve.model.label == Label("m", "model")
    assert serve.doc == "the export"


def test_file_weights_and_model_data_are_inputs(tmp_path: Path) -> None:
    _files(tmp_path, "m/w.weights.h5", "m/vocab.txt")
    write_build(
        tmp_path,
        "m",
        """\
        keras_model(name="model", factory="m.model:build", weights="w.weights.h5",
                    data=["vocab.txt"])
        keras_export(name="e", model=":model", out="sub/e_dir")
        """,
    )
    (action,) = graph(tmp_path).actions
    assert action.inputs == ("m/vocab.txt", "m/w.weights.h5")
    assert action.weights == "m/w.weights.h5" and action.deps == ()
    assert action.output == "artifacts/m/sub/e_dir"


def test_sample_inputs_are_an_input_of_the_action_or_a_job_field(tmp_path: Path) -> None:
    _files(tmp_path, "m/w.weights.h5", "m/samples.npz")
    write_build(
        tmp_path,
        "m",
        """\
        keras_model(name="model", factory="m.model:build", weights="w.weights.h5")
        keras_export(name="file", model=":model", sample_inputs="samples.npz")
        keras_export(name="fn", model=":model", sample_inputs="m.samples:make",
                     strict_verification=True)
        keras_export(name="missing", model=":model", sample_inputs="nope.npz")
        """,
    )
    result = graph(tmp_path)
    by_name = {a.label.name: a for a in result.actions}
    by_file, by_fn = by_name["file"], by_name["fn"]
    assert by_file.inputs == ("m/samples.npz", "m/w.weights.h5")
    assert isinstance(by_file.job, ExportJob) and isinstance(by_fn.job, ExportJob)
    assert by_file.job.sample_inputs_file == "m/samples.npz"
    assert by_file.job.sample_inputs is None and not by_file.job.strict_verification
    assert by_fn.inputs == ("m/w.weights.h5",) and by_fn.job.sample_inputs == "m.samples:make"
    assert by_fn.job.strict_verification
    assert "m.samples" in code_modules(by_fn)
    assert "attribute 'sample_inputs': file m/nope.npz does not exist" in failures(result)[
        "//m:missing"
    ]
    assert by_fn.data_owner == Label("m", "model")


def test_the_workspace_policy_reaches_every_job(tmp_path: Path) -> None:
    _files(tmp_path, "m/w.weights.h5")
    write_build(
        tmp_path,
        "m",
        """\
        keras_train(name="t", factory="m.model:build", train="m.train:fit")
        keras_model(name="model", factory="m.model:build", weights="w.weights.h5")
        keras_export(name="default", model=":model")
        keras_export(name="lenient", model=":model", strict_verification=False)
        """,
    )
    policy = Policy(strict_verification=True, warn_undeclared_inputs=True)
    jobs = {a.label.name: a for a in analyse(tmp_path, load_workspace(tmp_path), policy).actions}
    assert all(a.job.warn_undeclared_inputs for a in jobs.values())
    assert jobs["default"].job.strict_verification  # type: ignore[union-attr]
    assert not jobs["lenient"].job.strict_verification  # type: ignore[union-attr]
    assert jobs["t"].data_owner == Label("m", "t")
    plain = {a.label.name: a for a in graph(tmp_path).actions}
    assert not plain["default"].job.warn_undeclared_inputs
    assert not plain["default"].job.strict_verification  # type: ignore[union-attr]


def test_duplicate_target_names_both_lines(tmp_path: Path) -> None:
    _files(tmp_path, "m/w.keras")
    path = write_build(
        tmp_path,
        "m",
        """\
        keras_model(name="model", factory="m.model:build", weights="w.keras")
        keras_export(name="e", model=":model")
        keras_export(name="e", model=":model", doc="second")
        """,
    )
    message = failures(graph(tmp_path))["//m:e"]
    first, second = line_of(path, 'name="e"'), line_of(path, "second")
    assert f"declared twice, at m/BUILD.py:{first} and m/BUILD.py:{second}" in message
    assert message.startswith("//m:e: ")


def test_missing_target_suggests_the_closest_names(tmp_path: Path) -> None:
    _files(tmp_path, "m/w.keras")
    write_build(
        tmp_path,
        "m",
        """\
        keras_model(name="mnist_model", factory="m.model:build", weights="w.keras")
        keras_model(name="other", factory="m.model:build", weights="w.keras")
        keras_export(name="e", model=":mnist_modle")
        """,
    )
    result = graph(tmp_path)
    message = failures(result)["//m:e"]
    assert "attribute 'model': no target 'mnist_modle' in package 'm'." in message
    assert "Did you mean 'mnist_model'?" in message
    assert "(declared at m/BUILD.py:4)" in message
    assert result.actions == ()


def test_missing_package_suggests_the_closest_package(tmp_path: Path) -> None:
    model_package(tmp_path, "models/mnist")
    write_build(tmp_path, "x", 'keras_export(name="e", model="//models/mnsit:model")\n')
    message = failures(graph(tmp_path))["//x:e"]
    assert "no package 'models/mnsit'" in message
    assert "Did you mean 'models/mnist'?" in message


def test_label_into_a_package_that_failed_to_load(tmp_path: Path) -> None:
    write_build(tmp_path, "broken", "raise ValueError('nope')\n")
    write_build(tmp_path, "x", 'keras_export(name="e", model="//broken:model")\n')
    result = graph(tmp_path)
    found = failures(result)
    assert found["broken/BUILD.py"] == "broken/BUILD.py:2: ValueError: nope"
    assert "//broken:model is in a BUILD.py that failed to load" in found["//x:e"]
    assert "broken/BUILD.py:2: ValueError: nope" in found["//x:e"]
    assert found["//x:e"].startswith("//x:e: attribute 'model': ")


def test_wrong_rule_kind(tmp_path: Path) -> None:
    model_package(tmp_path)
    write_build(
        tmp_path,
        "x",
        """\
        keras_export(name="e", model="//m:serve")
        keras_model(name="mm", factory="m.model:build", weights="//m:model")
        keras_export(name="e2", model=":mm")
        """,
    )
    found = failures(graph(tmp_path))
    assert "//m:serve is a keras_export, expected a keras_model" in found["//x:e"]
    expected = "attribute 'weights': //m:model is a keras_model, expected a keras_train"
    assert expected in found["//x:e2"]


def test_label_to_a_broken_target_says_what_is_wrong_with_it(tmp_path: Path) -> None:
    write_build(
        tmp_path,
        "m",
        """\
        keras_model(name="model", factory="m.model:build", weigths="w.keras")
        keras_export(name="e", model=":model")
        """,
    )
    found = failures(graph(tmp_path))
    assert "unknown attribute 'weigths'. Did you mean 'weights'?" in found["//m:model"]
    assert "(declared at m/BUILD.py:2)" in found["//m:model"]
    assert "//m:model has errors" in found["//m:e"]
    assert "'weigths'" in found["//m:e"]


def test_cycle_between_train_targets_is_reported_on_every_member(tmp_path: Path) -> None:
    model_package(
        tmp_path,
        extra_build="""\
        keras_train(name="a", factory="m.model:build", train="m.train:fit", weights=":b")
        keras_train(name="b", factory="m.model:build", train="m.train:fit", weights=":c")
        keras_train(name="c", factory="m.model:build", train="m.train:fit", weights=":a")
        keras_train(name="self", factory="m.model:build", train="m.train:fit", weights=":self")
        keras_train(name="after", factory="m.model:build", train="m.train:fit", weights=":a")
        """,
    )
    result = graph(tmp_path)
    found = failures(result)
    cycle = "dependency cycle: //m:a -> //m:b -> //m:c -> //m:a"
    for name in ("a", "b", "c"):
        assert cycle in found[f"//m:{name}"]
    assert "dependency cycle: //m:self -> //m:self" in found["//m:self"]
    assert "depends on //m:a, which cannot be built" in found["//m:after"]
    assert action_labels(result) == ["//m:serve", "//m:w"]


def test_missing_weights_and_data_files(tmp_path: Path) -> None:
    write_build(
        tmp_path,
        "m",
        """\
        keras_model(name="nw", factory="m.model:build", weights="gone.weights.h5")
        keras_export(name="e1", model=":nw")
        keras_train(name="t", factory="m.model:build", train="m.train:fit", data=["gone.txt"])
        """,
    )
    found = failures(graph(tmp_path))
    assert "//m:nw: attribute 'weights': file m/gone.weights.h5 does not exist" in found["//m:e1"]
    assert found["//m:e1"].endswith("(declared at m/BUILD.py:2)")  # the keras_model's line
    assert "attribute 'data': file m/gone.txt does not exist" in found["//m:t"]
    assert "(declared at m/BUILD.py:4)" in found["//m:t"]


def test_a_folder_is_not_a_data_file(tmp_path: Path) -> None:
    (tmp_path / "m" / "vocab").mkdir(parents=True)
    write_build(
        tmp_path,
        "m",
        'keras_train(name="t", factory="m.model:build", train="m.train:fit", data=["vocab"])\n',
    )
    assert "attribute 'data': m/vocab is a folder, not a file" in failures(graph(tmp_path))["//m:t"]


def test_unknown_format(tmp_path: Path) -> None:
    model_package(tmp_path, extra_build='keras_export(name="x", model=":model", format="torch")\n')
    result = graph(tmp_path)
    message = failures(result)["//m:x"]
    assert (
        "unknown format 'torch'; known formats: ['litert', 'onnx', 'openvino', 'tf_saved_model']"
        in message
    )
    assert "//m:serve" in action_labels(result)


def test_jax2tf_kwargs_on_a_tensorflow_model(tmp_path: Path) -> None:
    model_package(
        tmp_path,
        extra_build="""\
        keras_export(name="x", model=":model", jax2tf_kwargs={"enable_xla": False})
        keras_model(name="jm", factory="m.model:build", weights=":w", backend="jax")
        keras_export(name="ok", model=":jm", jax2tf_kwargs={"enable_xla": False})
        """,
    )
    result = graph(tmp_path)
    message = failures(result)["//m:x"]
    assert "attribute 'jax2tf_kwargs' only applies to the 'jax' backend" in message
    assert "//m:model uses 'tensorflow'" in message
    jax_export = next(a for a in result.actions if a.label == Label("m", "ok"))
    assert jax_export.backend == "jax" and jax_export.target.jax2tf_kwargs is not None


def test_two_targets_writing_the_same_artifact(tmp_path: Path) -> None:
    model_package(
        tmp_path,
        extra_build="""\
        keras_export(name="a", model=":model", out="shared")
        keras_export(name="b", model=":model", out="shared")
        keras_export(name="c", model=":model", out="w.weights.h5")
        """,
    )
    result = graph(tmp_path)
    found = failures(result)
    assert "targets //m:a, //m:b write the same artifact path artifacts/m/shared" in found["//m:a"]
    assert "targets //m:a, //m:b write the same artifact path artifacts/m/shared" in found["//m:b"]
    assert "targets //m:c, //m:w write the same artifact path" in found["//m:c"]
    assert "//m:w" in found
    assert "depends on //m:w, which cannot be built" in found["//m:serve"]
    assert result.actions == ()


def test_one_artifact_inside_another(tmp_path: Path) -> None:
    model_package(
        tmp_path,
        extra_build="""\
        keras_export(name="outer", model=":model", out="dir")
        keras_export(name="inner", model=":model", out="dir/inner")
        keras_export(name="sibling", model=":model", out="dir.other")
        """,
    )
    result = graph(tmp_path)
    found = failures(result)
    clash = "targets //m:inner, //m:outer write the same artifact path artifacts/m/dir"
    for name in ("outer", "inner"):
        assert clash in found[f"//m:{name}"]
    assert "//m:sibling" in action_labels(result)


def test_an_out_over_another_targets_manifest_names_both_targets(tmp_path: Path) -> None:
    """out equal to another target's manifest path would let a publish replace the manifest
    with a folder, and the other target could never publish again."""
    model_package(
        tmp_path,
        extra_build="""\
        keras_export(name="good", model=":model")
        keras_export(name="bad", model=":model", out="good.manifest.json")
        """,
    )
    found = failures(graph(tmp_path))
    for name in ("good", "bad"):
        message = found[f"//m:{name}"]
        assert "targets //m:bad, //m:good write into each other's paths at " in message
        assert "artifacts/m/good.manifest.json (the manifest of //m:good; the artifact of " \
            "//m:bad)" in message


def test_a_target_named_like_a_subpackage_clashes_with_its_artifacts(tmp_path: Path) -> None:
    model_package(tmp_path, "m/sub")
    model_package(tmp_path, "m", extra_build='keras_export(name="sub", model=":model")\n')
    found = failures(graph(tmp_path))
    assert "artifacts/m/sub" in found["//m:sub"]
    assert "//m/sub:w" in found and "//m/sub:serve" in found


def test_failures_propagate_to_dependents_and_independent_targets_build(
    tmp_path: Path,
) -> None:
    model_package(tmp_path, "good")
    write(tmp_path, "bad/model.py", "")
    write_build(
        tmp_path,
        "bad",
        """\
        keras_train(name="base", factory="bad.model:b", train="bad.model:t", data=["gone"])
        keras_train(name="tuned", factory="bad.model:b", train="bad.model:t", weights=":base")
        keras_model(name="model", factory="bad.model:b", weights=":tuned")
        keras_export(name="serve", model=":model")
        """,
    )
    result = graph(tmp_path)
    found = failures(result)
    assert "file bad/gone does not exist" in found["//bad:base"]
    assert "depends on //bad:base, which cannot be built" in found["//bad:tuned"]
    assert "depends on //bad:tuned, which cannot be built" in found["//bad:serve"]
    assert action_labels(result) == ["//good:serve", "//good:w"]
    assert all(f.label is not None for f in result.failures)


def test_targets_whose_rules_have_no_action_are_not_actions(tmp_path: Path) -> None:
    _files(tmp_path, "m/w.keras")
    write_build(
        tmp_path,
        "m",
        'keras_model(name="model", factory="m.model:build", weights="w.keras")\n',
    )
    result = graph(tmp_path)
    assert result.actions == () and result.failures == ()


def test_the_example_workspace_analyses_cleanly() -> None:
    result = analyse(REPO, load_workspace(REPO))
    assert result.failures == ()
    labels = action_labels(result)
    assert "//models/mnist:mnist_serving" in labels and "//models/mnist:mnist_weights" in labels
    jax = next(a for a in result.actions if a.label.name == "jax_regressor_serving")
    assert jax.backend == "jax" and jax.deps == (
        Label("models/jax_regressor", "jax_regressor_weights"),
    )
