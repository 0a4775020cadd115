"""Resolve loaded targets into build actions; every problem becomes a Failure naming its label."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import cast

from rules.core.backends import BACKENDS, Backend
from rules.core.errors import did_you_mean
from rules.core.files import MANIFEST_SUFFIX
from rules.core.formats import EXPORT_FORMATS
from rules.core.frozen import FrozenMap
from rules.core.job import ExportJob, Job, TrainJob
from rules.loading.build_files import Package
from rules.loading.labels import Label
from rules.loading.targets import (
    BrokenTarget,
    ExportTarget,
    FileRef,
    ModelTarget,
    Target,
    TrainTarget,
)

ARTIFACTS = "artifacts"
RULE_NAMES = {TrainTarget: "keras_train", ModelTarget: "keras_model", ExportTarget: "keras_export"}


@dataclass(frozen=True)
class Action:
    """One thing to build: a keras_train or keras_export target, fully resolved.

    `job` is what the action does, for the worker and for the key alike;
    `inputs` are the files whose content enters the key, `deps` the train
    actions that produce some of them, `output` the workspace-relative path.
    """

    label: Label
    target: TrainTarget | ExportTarget
    model: ModelTarget | None
    job: Job
    inputs: tuple[str, ...]
    deps: tuple[Label, ...]
    output: str

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def backend(self) -> str:
        return self.job.backend

    @property
    def factory(self) -> str:
        return self.job.factory

    @property
    def weights(self) -> str | None:
        return self.job.weights

    @property
    def doc(self) -> str:
        return self.target.doc

    @property
    def data_owner(self) -> Label:
        """The target whose `data` lists the files the action's code reads."""
        return self.model.label if self.model is not None else self.label

    @property
    def resources(self) -> FrozenMap:
        """Where the action may run: the model's resources, overridden name by name by its own.

        Kept on the targets, not the job, so it never enters the key: where an
        action runs must not change what it produces.
        """
        merged = dict(self.model.resources) if self.model is not None else {}
        merged.update(self.target.resources)
        return FrozenMap(merged)


@dataclass(frozen=True)
class Failure:
    """A target (or BUILD.py) that cannot be built, and why."""

    name: str
    message: str
    label: Label | None = None


@dataclass(frozen=True)
class BuildGraph:
    actions: tuple[Action, ...]
    failures: tuple[Failure, ...]


def output_path(target: TrainTarget | ExportTarget) -> str:
    """Where the artifact goes: `out` is taken as given, a name gets the format's suffix.

    The suffix matters to the tools: Keras writes LiteRT only to a `.tflite`
    path, and ONNX tooling recognises `.onnx` files.
    """
    pkg = PurePosixPath(ARTIFACTS, target.label.package)
    if isinstance(target, TrainTarget):
        return str(pkg / f"{target.label.name}.weights.h5")
    if target.out:
        return str(pkg / target.out)
    return str(pkg / (target.label.name + EXPORT_FORMATS[target.format].suffix))


@dataclass(frozen=True)
class Policy:
    """Workspace settings that decide whether a job fails; they enter its key with the job."""

    strict_verification: bool = False
    warn_undeclared_inputs: bool = False


class _Resolver:
    def __init__(self, root: Path, packages: tuple[Package, ...], policy: Policy) -> None:
        self.root = root
        self.policy = policy
        self.packages = {p.name: p for p in packages}
        self.targets: dict[Label, Target] = {}
        self.failures: dict[Label, str] = {}
        for package in packages:
            first_seen: dict[Label, str] = {}
            for target in package.targets:
                if target.label in first_seen:
                    self.failures[target.label] = (
                        f"target name {target.label.name!r} is declared twice, at "
                        f"{first_seen[target.label]} and {target.where}"
                    )
                    continue
                first_seen[target.label] = target.where
                self.targets[target.label] = target
                if isinstance(target, BrokenTarget):
                    self.failures[target.label] = f"{target.message} (declared at {target.where})"

    def lookup(self, label: Label, wanted: type, user: Label, attr: str) -> Target:
        """The target `label` names, or raise _Unresolved with a helpful message."""
        package = self.packages.get(label.package)
        if package is None:
            hint = did_you_mean(label.package, self.packages)
            raise _Unresolved(
                f"attribute {attr!r}: no package {label.package!r} (no BUILD.py in "
                f"{label.package or '.'}/) for {label}.{hint}"
            )
        if package.error is not None:
            raise _Unresolved(
                f"attribute {attr!r}: {label} is in a BUILD.py that failed to load: "
                f"{package.error}"
            )
        target = self.targets.get(label)
        if target is None:
            names = [t.label.name for t in package.targets]
            raise _Unresolved(
                f"attribute {attr!r}: no target {label.name!r} in package "
                f"{label.package!r}.{did_you_mean(label.name, names)}"
            )
        if label in self.failures:
            raise _Unresolved(f"attribute {attr!r}: {label} has errors: {self.failures[label]}")
        if not isinstance(target, wanted):
            raise _Unresolved(
                f"attribute {attr!r}: {label} is a {RULE_NAMES[type(target)]}, "
                f"expected a {RULE_NAMES[wanted]}"
            )
        return target

    def check_file(self, ref: FileRef, attr: str) -> str:
        path = self.root / ref.path
        if path.is_dir():
            raise _Unresolved(f"attribute {attr!r}: {ref.path} is a folder, not a file")
        if not path.is_file():
            raise _Unresolved(f"attribute {attr!r}: file {ref.path} does not exist")
        return ref.path

    def weights(self, ref: FileRef | Label, user: Label, attr: str) -> tuple[str, Label | None]:
        if isinstance(ref, FileRef):
            return self.check_file(ref, attr), None
        producer = self.lookup(ref, TrainTarget, user, attr)
        assert isinstance(producer, TrainTarget)
        return output_path(producer), ref

    def action(self, target: TrainTarget | ExportTarget) -> Action:
        label = target.label
        if isinstance(target, TrainTarget):
            data = [self.check_file(f, "data") for f in target.data]
            weights, dep = (None, None)
            if target.weights is not None:
                weights, dep = self.weights(target.weights, label, "weights")
            train = TrainJob(
                label=str(label),
                backend=_backend(target.backend),
                factory=target.factory,
                train=target.train,
                seed=target.seed,
                weights=weights,
                warn_undeclared_inputs=self.policy.warn_undeclared_inputs,
            )
            return Action(
                label=label,
                target=target,
                model=None,
                job=train,
                inputs=tuple(sorted({*data, *([weights] if weights else [])})),
                deps=(dep,) if dep else (),
                output=output_path(target),
            )
        model = self.lookup(target.model, ModelTarget, label, "model")
        assert isinstance(model, ModelTarget)
        backends = EXPORT_FORMATS[target.format].backends
        if model.backend not in backends:
            raise _Unresolved(
                f"format {target.format!r} cannot be exported from the {model.backend!r} "
                f"backend of {model.label}; it supports {list(backends)}"
            )
        if target.jax2tf_kwargs is not None and model.backend != "jax":
            raise _Unresolved(
                f"attribute 'jax2tf_kwargs' only applies to the 'jax' backend; "
                f"{model.label} uses {model.backend!r}"
            )
        try:
            data = [self.check_file(f, "data") for f in model.data]
            weights, dep = self.weights(model.weights, model.label, "weights")
        except _Unresolved as err:
            # The fix is in the keras_model's call, not the export's: point there.
            raise _Unresolved(f"{model.label}: {err}", where=model.where) from None
        samples = target.sample_inputs
        samples_file = self.check_file(samples, "sample_inputs") if isinstance(
            samples, FileRef) else None
        strict = target.strict_verification
        kwargs = target.jax2tf_kwargs
        job = ExportJob(
            label=str(label),
            backend=_backend(model.backend),
            factory=model.factory,
            format=target.format,
            weights=weights,
            endpoints=target.endpoints,
            variable_collections=target.variable_collections,
            track=target.track,
            tolerance=target.tolerance,
            jax2tf_kwargs=None if kwargs is None else FrozenMap(dict(kwargs)),
            format_options=FrozenMap(dict(target.format_options)),
            sample_inputs=samples if isinstance(samples, str) else None,
            sample_inputs_file=samples_file,
            strict_verification=self.policy.strict_verification if strict is None else strict,
            warn_undeclared_inputs=self.policy.warn_undeclared_inputs,
        )
        return Action(
            label=label,
            target=target,
            model=model,
            job=job,
            inputs=tuple(sorted({*data, weights, *([samples_file] if samples_file else [])})),
            deps=(dep,) if dep else (),
            output=output_path(target),
        )


class _Unresolved(Exception):
    """A target cannot be resolved; `where` is the declaration to fix, if not the target's."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where


def _backend(name: str) -> Backend:
    # Loading only lets BACKENDS' names through; this narrows the type.
    assert name in BACKENDS, name
    return cast(Backend, name)


def analyse(
    root: Path, packages: tuple[Package, ...], policy: Policy | None = None
) -> BuildGraph:
    """Resolve every buildable target; failures propagate to the targets that depend on them."""
    resolver = _Resolver(root, packages, policy or Policy())
    failures: list[Failure] = [
        Failure(p.display_path, str(p.error)) for p in packages if p.error is not None
    ]
    actions: dict[Label, Action] = {}
    errors: dict[Label, str] = {}
    for label, target in resolver.targets.items():
        if label in resolver.failures:
            errors[label] = resolver.failures[label]
        elif isinstance(target, (TrainTarget, ExportTarget)):
            try:
                actions[label] = resolver.action(target)
            except _Unresolved as err:
                errors[label] = f"{err} (declared at {err.where or target.where})"
    for label, message in resolver.failures.items():
        if label not in resolver.targets:
            errors[label] = message
    _check_cycles(actions, errors)
    _check_outputs(actions, errors)
    _check_serving(actions, errors)
    _propagate(actions, errors)
    for label in sorted(errors):
        failures.append(Failure(str(label), f"{label}: {errors[label]}", label))
    ordered = tuple(a for label, a in sorted(actions.items()) if label not in errors)
    return BuildGraph(ordered, tuple(failures))


def _check_cycles(actions: dict[Label, Action], errors: dict[Label, str]) -> None:
    state: dict[Label, int] = {}

    def visit(label: Label, path: list[Label]) -> None:
        if state.get(label) == 2 or label not in actions:
            return
        if state.get(label) == 1:
            cycle = [*path[path.index(label) :], label]
            text = " -> ".join(str(c) for c in cycle)
            for member in cycle:
                errors.setdefault(member, f"dependency cycle: {text}")
            return
        state[label] = 1
        for dep in actions[label].deps:
            visit(dep, [*path, label])
        state[label] = 2

    for label in sorted(actions):
        visit(label, [])


def _check_outputs(actions: dict[Label, Action], errors: dict[Label, str]) -> None:
    """Two targets may not write the same path, nor one inside the other's: an artifact and
    its manifest (`<artifact>.manifest.json`) are both written, so both are claimed."""
    claims: dict[str, list[tuple[Label, str]]] = defaultdict(list)
    for label, action in actions.items():
        claims[action.output].append((label, "the artifact"))
        claims[action.output + MANIFEST_SUFFIX].append((label, "the manifest"))
    paths = sorted(claims)
    for path in paths:
        clash = list(claims[path])
        # Everything under path/ sorts between "path/" and "path0" ('0' follows '/'),
        # so a bisection finds it: the pairwise scan cost a 1,000-target no-op 0.3 s.
        start, end = bisect_left(paths, path + "/"), bisect_left(paths, path + "0")
        for other in paths[start:end]:
            clash.extend(claims[other])
        owners = sorted({label for label, _ in clash})
        if len(owners) < 2:
            continue
        names = ", ".join(str(c) for c in owners)
        if all(role == "the artifact" for _, role in claims[path]):
            message = f"targets {names} write the same artifact path {path}"
        else:
            roles = "; ".join(f"{role} of {label}" for label, role in clash)
            message = f"targets {names} write into each other's paths at {path} ({roles})"
        for label in owners:
            errors.setdefault(label, message)


def _check_serving(actions: dict[Label, Action], errors: dict[Label, str]) -> None:
    """Two targets may not publish to the same TF Serving model: versions would interleave."""
    by_name: dict[str, list[Label]] = defaultdict(list)
    for label, action in actions.items():
        if isinstance(action.target, ExportTarget) and action.target.serving:
            by_name[action.target.serving].append(label)
    for name, labels in sorted(by_name.items()):
        if len(labels) > 1:
            names = ", ".join(str(c) for c in sorted(labels))
            for label in labels:
                errors.setdefault(
                    label, f"targets {names} publish the same TF Serving model {name!r}"
                )


def _propagate(actions: dict[Label, Action], errors: dict[Label, str]) -> None:
    changed = True
    while changed:
        changed = False
        for label, action in actions.items():
            if label in errors:
                continue
            bad = [d for d in action.deps if d in errors]
            if bad:
                errors[label] = f"depends on {bad[0]}, which cannot be built"
                changed = True
