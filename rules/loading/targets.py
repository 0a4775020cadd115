"""Frozen target values produced by loading: one class per rule, plus a broken placeholder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rules.core.frozen import FrozenMap
from rules.core.specs import Endpoint
from rules.loading.labels import Label


@dataclass(frozen=True)
class FileRef:
    """A file input, by workspace-relative posix path."""

    path: str


@dataclass(frozen=True)
class TrainTarget:
    """keras_train: run a training function and write `<name>.weights.h5`."""

    label: Label
    where: str
    factory: str
    train: str
    backend: str
    seed: int
    data: tuple[FileRef, ...]
    weights: FileRef | Label | None
    doc: str
    # Where the action may run (Ray scheduling options); never in the key.
    resources: FrozenMap = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class ModelTarget:
    """keras_model: an architecture (factory) plus the weights to load into it."""

    label: Label
    where: str
    factory: str
    weights: FileRef | Label
    backend: str
    data: tuple[FileRef, ...]
    doc: str
    # The default of its exports' resources (each export may override a name).
    resources: FrozenMap = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class ExportTarget:
    """keras_export: one exported artifact of a keras_model."""

    label: Label
    where: str
    model: Label
    format: str
    endpoints: tuple[Endpoint, ...]
    variable_collections: tuple[tuple[str, str], ...]
    track: tuple[str, ...]
    tolerance: float
    jax2tf_kwargs: tuple[tuple[str, Any], ...] | None
    out: str | None
    doc: str
    format_options: tuple[tuple[str, Any], ...] = ()
    serving: str | None = None
    # "module:function" or a .npz file: the parity check's inputs.
    sample_inputs: FileRef | str | None = None
    # None: the workspace's strict_verification setting decides.
    strict_verification: bool | None = None
    resources: FrozenMap = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class BrokenTarget:
    """A declaration that failed validation; dependents report it instead of 'missing'."""

    label: Label
    where: str
    message: str


Target = TrainTarget | ModelTarget | ExportTarget | BrokenTarget
