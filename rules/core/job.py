"""The typed job: what one action does, the single source of a worker's orders and of its key.

Analysis builds one job per action. The action key hashes `key_attributes()`,
which is every field of the job but the few in NOT_IN_KEY, each excluded for
a stated reason; a worker, a server child or a cluster node receives
`to_wire()` and parses it once with `job_from_wire()`. So what a worker is
told and what the key covers come from one object: a field added to the job
enters the key unless someone writes down why it must not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from rules.core.backends import Backend
from rules.core.frozen import FrozenMap, thaw
from rules.core.specs import Endpoint, endpoint_from_json

JobKind = Literal["keras_export", "keras_train"]


class _JobFields:
    """What both job kinds share: the wire form and the key's attributes, from the fields."""

    kind: ClassVar[JobKind]
    # Field name -> why it must not enter the key. Anything not listed does.
    NOT_IN_KEY: ClassVar[Mapping[str, str]]

    def key_attributes(self) -> dict[str, Any]:
        """The JSON the action key hashes: the kind and every field not in NOT_IN_KEY.

        A field that is None, False or empty is left out, as proto3 leaves out
        fields at their zero value: adding an optional field then keeps every
        existing key (no rebuild of the world), while setting it changes the key.
        """
        attrs: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self.NOT_IN_KEY or _is_empty(value):
                continue
            attrs[f.name] = _to_json(value)
        return attrs

    def to_wire(self) -> dict[str, Any]:
        """Plain JSON data; job_from_wire(job.to_wire()) == job."""
        wire: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            wire[f.name] = _to_json(getattr(self, f.name))
        return wire


@dataclass(frozen=True)
class TrainJob(_JobFields):
    """keras_train: seed, build the model, load starting weights, train in place, save weights."""

    label: str
    backend: Backend
    factory: str
    train: str
    seed: int = 0
    # Workspace-relative path of the starting weights, if any.
    weights: str | None = None
    # undeclared_inputs = "warn": a read the action did not declare is a
    # warning, not a failure. In the key, so an artifact built while reads
    # were only warned about never satisfies a build that fails on them.
    warn_undeclared_inputs: bool = False

    kind: ClassVar[JobKind] = "keras_train"
    NOT_IN_KEY: ClassVar[Mapping[str, str]] = {
        "label": "a target's name does not change what it builds",
        "weights": "the weights enter the key by content digest, not by path",
    }


@dataclass(frozen=True)
class ExportJob(_JobFields):
    """keras_export: build the model, load its weights, export in `format`, verify, record."""

    label: str
    backend: Backend
    factory: str
    format: str
    # Workspace-relative path of the weights loaded into the model.
    weights: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    variable_collections: tuple[tuple[str, str], ...] = ()
    track: tuple[str, ...] = ()
    tolerance: float = 1e-5
    jax2tf_kwargs: FrozenMap | None = None
    format_options: FrozenMap = field(default_factory=FrozenMap)
    # The parity check's inputs: "module:function" (its module is in the
    # key's code closure), or a workspace-relative .npz file.
    sample_inputs: str | None = None
    sample_inputs_file: str | None = None
    # A vacuous parity check (constant, zero or NaN Keras outputs) fails the
    # target instead of warning. In the key: a strict build must not take an
    # artifact whose check was allowed to prove nothing.
    strict_verification: bool = False
    warn_undeclared_inputs: bool = False

    kind: ClassVar[JobKind] = "keras_export"
    NOT_IN_KEY: ClassVar[Mapping[str, str]] = {
        "label": "a target's name does not change what it builds",
        "weights": "the weights enter the key by content digest, not by path",
        "sample_inputs_file": "the file enters the key by content digest, not by path",
    }


Job = ExportJob | TrainJob


@dataclass(frozen=True)
class DeclaredInputs:
    """What a job may read in the workspace, for the audit of what it does read.

    `files` are workspace-relative: the action's input files and the key's
    code closure. `owner` is the label whose `data` takes a missing file (the
    keras_model of an export, the keras_train itself). Reads under `ignored`
    (the artifacts and state folders) never count. Not part of the job: all
    of it is in the key already, by content or by the job's fields.
    """

    files: tuple[str, ...]
    owner: str
    ignored: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"files": list(self.files), "owner": self.owner, "ignored": list(self.ignored)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> DeclaredInputs:
        return cls(
            tuple(str(f) for f in data["files"]),
            str(data["owner"]),
            tuple(str(i) for i in data["ignored"]),
        )


def job_from_wire(data: Mapping[str, Any]) -> Job:
    """Parse a job sent by to_wire(); raises ValueError on anything else."""
    try:
        kind = data["kind"]
        if kind == "keras_train":
            return TrainJob(
                label=str(data["label"]),
                backend=data["backend"],
                factory=str(data["factory"]),
                train=str(data["train"]),
                seed=int(data["seed"]),
                weights=data["weights"],
                warn_undeclared_inputs=bool(data["warn_undeclared_inputs"]),
            )
        if kind == "keras_export":
            kwargs = data["jax2tf_kwargs"]
            return ExportJob(
                label=str(data["label"]),
                backend=data["backend"],
                factory=str(data["factory"]),
                format=str(data["format"]),
                weights=data["weights"],
                endpoints=tuple(endpoint_from_json(ep) for ep in data["endpoints"]),
                variable_collections=tuple(
                    (str(name), str(path)) for name, path in data["variable_collections"]
                ),
                track=tuple(str(t) for t in data["track"]),
                tolerance=float(data["tolerance"]),
                jax2tf_kwargs=None if kwargs is None else FrozenMap(kwargs),
                format_options=FrozenMap(data["format_options"]),
                sample_inputs=data["sample_inputs"],
                sample_inputs_file=data["sample_inputs_file"],
                strict_verification=bool(data["strict_verification"]),
                warn_undeclared_inputs=bool(data["warn_undeclared_inputs"]),
            )
    except (KeyError, TypeError) as err:
        raise ValueError(f"malformed job: {type(err).__name__}: {err}") from None
    raise ValueError(f"unknown job kind {kind!r}")


def _is_empty(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, (tuple, Mapping)) and not value)


def _to_json(value: Any) -> Any:
    if isinstance(value, Endpoint):
        return value.to_json()
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return thaw(value)
    return value
