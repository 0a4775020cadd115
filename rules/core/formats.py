"""What each export format needs: backends, artifact name, optional packages and options."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal

from rules.core.job import ExportJob, Job


@dataclass(frozen=True)
class ExportFormat:
    """One value of keras_export(format=...), as the installed Keras can produce it.

    backends: the Keras backends it can be exported from here.
    suffix: appended to the target name for a single-file artifact; "" means a directory.
    modules: per backend, the optional modules the export and its runtime check import.
    dists: distributions whose versions enter the action key (converter and runtime).
    extra: the rules-keras extra that installs `modules`.
    options: names accepted in format_options; None means any name (converter settings).
    runtime: what verifies the artifact, for messages and the manifest.
    exporter: the module under rules.execution.formats that exports and checks it;
        "" means the module is named like the format.
    required: for a directory artifact, the top-level files it always holds.
    """

    name: str
    backends: tuple[str, ...]
    suffix: str
    modules: tuple[tuple[str, tuple[str, ...]], ...]
    dists: tuple[str, ...]
    extra: str | None
    options: frozenset[str] | None
    runtime: str
    exporter: str = ""
    required: tuple[str, ...] = ()

    def missing(self, backend: str) -> list[str]:
        """Optional modules this format needs on `backend` that are not installed.

        find_spec only reads import metadata, so analysis stays free of the
        heavy converters.
        """
        needed = dict(self.modules).get(backend, ())
        return [m for m in needed if importlib.util.find_spec(m) is None]

    def install_hint(self, backend: str) -> str:
        """The error text for missing modules: what is missing and the extra to install."""
        missing = self.missing(backend) or list(dict(self.modules).get(backend, ()))
        return (
            f"format {self.name!r} needs {' and '.join(missing)}; "
            f"pip install 'rules-keras[{self.extra}]'"
        )

    def tool_versions(self) -> dict[str, str]:
        """Installed converter and runtime versions: they change the artifact or its check."""
        from rules.core.toolchain import installed_version

        found: dict[str, str] = {}
        for dist in self.dists:
            version = installed_version(dist)
            if version is not None:
                found[dist] = version
        return found


# Backends follow Keras 3's Model.export: LiteRT needs the TensorFlow backend.
# OpenVINO converts a jax2tf function, which current JAX only emits as an
# XlaCallModule op that OpenVINO's TensorFlow frontend cannot convert, so it
# is offered on TensorFlow only.
EXPORT_FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            name="tf_saved_model",
            backends=("tensorflow", "jax"),
            suffix="",
            modules=(),
            dists=(),
            extra=None,
            options=frozenset(),
            runtime="TensorFlow",
            exporter="saved_model",
            required=("saved_model.pb",),
        ),
        ExportFormat(
            name="onnx",
            backends=("tensorflow", "jax"),
            suffix=".onnx",
            # TensorFlow converts through tf2onnx, JAX through jax2onnx.
            modules=(
                ("tensorflow", ("tf2onnx", "onnxruntime")),
                ("jax", ("jax2onnx", "onnxruntime")),
            ),
            dists=("onnx", "onnxruntime", "tf2onnx", "jax2onnx"),
            extra="onnx",
            options=frozenset({"opset_version"}),
            runtime="ONNX Runtime",
        ),
        ExportFormat(
            name="litert",
            backends=("tensorflow",),
            suffix=".tflite",
            modules=(("tensorflow", ("ai_edge_litert",)),),
            dists=("ai-edge-litert",),
            extra="litert",
            options=None,
            runtime="the LiteRT interpreter",
        ),
        ExportFormat(
            name="openvino",
            backends=("tensorflow",),
            suffix="",
            modules=(("tensorflow", ("openvino",)),),
            dists=("openvino",),
            extra="openvino",
            options=frozenset(),
            runtime="OpenVINO Runtime",
            required=("model.xml", "model.bin"),
        ),
    )
}


@dataclass(frozen=True)
class Expected:
    """The shape every correct artifact of one target has, whatever its inputs.

    A cache entry that lacks it cannot be this target's artifact, whatever its
    digests say: an empty ActionResult, or a SavedModel folder without
    saved_model.pb, is refused before anything is restored (issue 15 §1).
    """

    kind: Literal["directory", "file"]
    # Top-level files a directory artifact must hold, each non-empty.
    required: tuple[str, ...] = ()

    def problem(self, kind: str, files: dict[str, int]) -> str | None:
        """Why an artifact of `kind` with `files` ({path: size}) is not of this shape, or None."""
        if kind != self.kind:
            return f"it holds a {kind}, but this target makes a {self.kind}"
        if not files:
            return "it holds no files"
        if kind == "file" and len(files) != 1:
            return f"it holds {len(files)} files, but this target makes exactly one"
        for name in self.required:
            if not files.get(name):
                return f"it has no {name}" if name not in files else f"its {name} is empty"
        return None


def expected(job: Job) -> Expected:
    """What the artifact of `job` must look like: the format's layout, or one weights file."""
    if not isinstance(job, ExportJob):
        return Expected("file")
    fmt = EXPORT_FORMATS[job.format]
    return Expected("file", ()) if fmt.suffix else Expected("directory", fmt.required)
