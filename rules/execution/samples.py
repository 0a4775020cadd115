"""The parity check's inputs: generated from the signature (in-vocabulary where the model has
lookup layers), or given by the target's `sample_inputs` (a function or a .npz file)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rules.core.errors import did_you_mean
from rules.core.job import ExportJob
from rules.core.specs import Endpoint, SpecDict, SpecTree, TensorSpec, leaves
from rules.execution.failures import JobFailure, import_ref, user_traceback

# Calls per endpoint: enough that an output which never changes shows it.
SAMPLES = 4
# Dynamic dimensions become this size in sample inputs: small, but more than 1
# so that batch-dependent bugs (e.g. a squeezed axis) still show.
DYNAMIC_DIM = 2
# Integers are drawn from [0, INT_HIGH): small enough to index any embedding
# or lookup table a real model has.
INT_HIGH = 4
# Words of the generated strings when the model has no vocabulary to draw from.
WORDS = ("the", "a", "good", "bad", "movie", "great", "plot", "boring", "fun", "model")
PHRASE = 3


@dataclass(frozen=True)
class Vocabulary:
    """Values the model's lookup layers know, so that generated samples are not all OOV.

    `strings` feed every string input (tokens of StringLookup and
    TextVectorization layers); `phrases` joins PHRASE of them per element when
    only TextVectorization layers (which split text) have them. `ints` maps a
    model input's name to the IntegerLookup vocabulary it feeds: integers are
    drawn from it only where the layer is known to read that input, since an
    Embedding fed the same values could be out of range.
    """

    strings: tuple[str, ...] = ()
    phrases: bool = False
    ints: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    layers: tuple[str, ...] = ()

    def describe(self) -> str:
        if not self.layers:
            return "generated"
        return "generated, drawn from the vocabulary of " + ", ".join(
            repr(name) for name in self.layers
        )


NO_VOCABULARY = Vocabulary()


@dataclass(frozen=True)
class Sampled:
    """The calls made on one endpoint: each a list of positional arguments."""

    calls: tuple[list[Any], ...]
    source: str
    seed: int | None = None


def sample(tree: SpecTree, rng: np.random.Generator, vocab: Vocabulary = NO_VOCABULARY) -> Any:
    """A nest of numpy arrays matching a spec tree, drawn leaf by leaf in Keras's order."""
    return _map_named(tree, lambda spec, name: _sample_leaf(spec, name, rng, vocab), None)


def _map_named(
    tree: SpecTree, fn: Callable[[TensorSpec, str | None], Any], name: str | None
) -> Any:
    """map_tree, with each leaf's input name: its own, else the nearest dict key."""
    if isinstance(tree, TensorSpec):
        return fn(tree, tree.name or name)
    if isinstance(tree, SpecDict):
        return {key: _map_named(value, fn, key) for key, value in tree.items}
    return [_map_named(t, fn, name) for t in tree]


def _sample_leaf(
    spec: TensorSpec, name: str | None, rng: np.random.Generator, vocab: Vocabulary
) -> Any:
    shape = tuple(DYNAMIC_DIM if d is None else d for d in spec.shape)
    dtype = spec.dtype
    if dtype == "string":
        if vocab.strings and not vocab.phrases:
            return rng.choice(np.array(vocab.strings, dtype=object), size=shape)
        words = rng.choice(vocab.strings or WORDS, size=(*shape, PHRASE))
        return np.array(
            [" ".join(w) for w in words.reshape(-1, PHRASE)], dtype=object
        ).reshape(shape)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith(("int", "uint")):
        known = vocab.ints.get(name or "")
        if known:
            return rng.choice(np.array(known), size=shape).astype(dtype)
        return rng.integers(0, INT_HIGH, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype("float32").astype(dtype)


def generated(ep: Endpoint, seed: int, vocab: Vocabulary = NO_VOCABULARY) -> Sampled:
    """SAMPLES calls drawn in turn from one generator seeded with `seed`.

    The first call is `sample(tree, default_rng(seed))` for each input, so a
    target exported in several formats is checked on the same inputs in each.
    """
    rng = np.random.default_rng(seed)
    calls = tuple([sample(tree, rng, vocab) for tree in ep.inputs] for _ in range(SAMPLES))
    return Sampled(calls, vocab.describe(), seed)


def vocabulary(model: Any) -> Vocabulary:
    """What the model's StringLookup, TextVectorization and IntegerLookup layers know."""
    layers = _layers(model)
    if not layers:
        return NO_VOCABULARY
    import keras

    strings: list[str] = []
    ints: dict[str, list[int]] = {}
    names: list[str] = []
    only_text = True
    # A TextVectorization keeps its vocabulary in a StringLookup of its own,
    # which sees tokens after splitting: the TextVectorization speaks for it.
    inner = {id(getattr(layer, "_lookup_layer", None)) for layer in layers
             if isinstance(layer, keras.layers.TextVectorization)}
    for layer in (lyr for lyr in layers if id(lyr) not in inner):
        if isinstance(layer, keras.layers.IntegerLookup):
            values = [int(v) for v in layer.get_vocabulary(include_special_tokens=False)]
            fed = _model_inputs_feeding(layer, model)
            for name in fed:
                ints.setdefault(name, []).extend(values)
            if values and fed:
                names.append(layer.name)
        elif isinstance(layer, (keras.layers.StringLookup, keras.layers.TextVectorization)):
            tokens = [_text(v) for v in layer.get_vocabulary(include_special_tokens=False)]
            tokens = [t for t in tokens if t]
            if tokens:
                strings.extend(tokens)
                names.append(layer.name)
                only_text = only_text and isinstance(layer, keras.layers.TextVectorization)
    return Vocabulary(
        strings=tuple(dict.fromkeys(strings)),
        phrases=bool(strings) and only_text,
        ints={name: tuple(dict.fromkeys(values)) for name, values in ints.items()},
        layers=tuple(dict.fromkeys(names)),
    )


def _layers(model: Any) -> list[Any]:
    """Every layer of the model, nested models' included."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=True))
    return list(getattr(model, "layers", []))


def _model_inputs_feeding(layer: Any, model: Any) -> set[str]:
    """Names of the functional model's inputs whose values reach `layer`; empty if unknown."""
    import keras

    found: set[str] = set()
    pending = list(getattr(layer, "_inbound_nodes", ()))
    seen: set[int] = set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        operation = getattr(node, "operation", None)
        if isinstance(operation, keras.layers.InputLayer):
            found.add(operation.name)
        else:
            pending.extend(getattr(node, "parent_nodes", ()))
    inputs = {getattr(t, "name", None) for t in getattr(model, "inputs", None) or ()}
    return found & {n for n in inputs if n}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def for_job(job: ExportJob, model: Any, endpoints: Sequence[Endpoint]) -> dict[str, Sampled]:
    """The calls for every endpoint: the target's sample_inputs where given, else generated.

    Endpoint i is generated with seed i, so that the first endpoint's samples
    are the same whatever the format.
    """
    given = _given(job, endpoints)
    vocab = vocabulary(model) if len(given) < len(endpoints) else NO_VOCABULARY
    return {
        ep.name: given.get(ep.name) or generated(ep, index, vocab)
        for index, ep in enumerate(endpoints)
    }


def _given(job: ExportJob, endpoints: Sequence[Endpoint]) -> dict[str, Sampled]:
    if job.sample_inputs is not None:
        return _from_function(job.sample_inputs, endpoints)
    if job.sample_inputs_file is not None:
        return _from_npz(job.sample_inputs_file, endpoints)
    return {}


def _from_function(ref: str, endpoints: Sequence[Endpoint]) -> dict[str, Sampled]:
    fn = import_ref(ref, "sample_inputs")
    if not callable(fn):
        raise JobFailure("SampleInputsError", f"sample_inputs {ref!r} is not callable")
    try:
        value = fn()
    except Exception as err:
        raise JobFailure(
            "SampleInputsError",
            f"sample_inputs {ref!r} raised {type(err).__name__}: {err}",
            user_traceback(err),
        ) from err
    where = f"sample_inputs {ref!r}"
    if not isinstance(value, Mapping):
        raise JobFailure(
            "SampleInputsError",
            f"{where} must return a dict of endpoint name -> list of calls, each a list with "
            f"one value per positional input. Received: {type(value).__name__}",
        )
    by_name = _known(value, endpoints, where)
    found = {}
    for name, calls in value.items():
        ep = by_name[name]
        if isinstance(calls, (str, bytes)) or not isinstance(calls, Sequence) or not calls:
            raise JobFailure(
                "SampleInputsError",
                f"{where}: endpoint {name!r} needs a non-empty list of calls. "
                f"Received: {type(calls).__name__}",
            )
        conformed = []
        for i, call in enumerate(calls):
            if not isinstance(call, (list, tuple)) or len(call) != len(ep.inputs):
                raise JobFailure(
                    "SampleInputsError",
                    f"{where}: call {i} of endpoint {name!r} must be a list of "
                    f"{len(ep.inputs)} positional input(s). Received: {_short(call)}",
                )
            conformed.append(
                [_conform(tree, arg, f"{where}: endpoint {name!r} call {i} input {j}")
                 for j, (tree, arg) in enumerate(zip(ep.inputs, call, strict=True))]
            )
        found[name] = Sampled(tuple(conformed), f"sample_inputs {ref}")
    return found


def _from_npz(path: str, endpoints: Sequence[Endpoint]) -> dict[str, Sampled]:
    """Arrays named "<endpoint>" (one input) or "<endpoint>/<input path>"; axis 0 is the call."""
    where = f"sample_inputs {path}"
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise JobFailure("SampleInputsError", f"{where} cannot be read: {err}") from err
    expected = {ep.name: _npz_keys(ep) for ep in endpoints}
    every = [key for keys in expected.values() for key in keys.values()]
    unknown = sorted(set(arrays) - set(every) - {ep.name for ep in endpoints})
    if unknown:
        raise JobFailure(
            "SampleInputsError",
            f"{where}: no endpoint input is called {unknown[0]!r}; expected {every}."
            + did_you_mean(unknown[0], every),
        )
    found = {}
    for ep in endpoints:
        keys = expected[ep.name]
        if len(keys) == 1 and ep.name in arrays:
            keys = {path_: ep.name for path_ in keys}
        present = {p: arrays[k] for p, k in keys.items() if k in arrays}
        if not present:
            continue
        if len(present) < len(keys):
            missing = sorted(k for p, k in keys.items() if p not in present)
            raise JobFailure("SampleInputsError", f"{where}: missing arrays {missing}")
        counts = {len(a) if a.ndim else 0 for a in present.values()}
        if len(counts) != 1 or 0 in counts:
            raise JobFailure(
                "SampleInputsError",
                f"{where}: the arrays of endpoint {ep.name!r} must share a first axis "
                "(one entry per call)",
            )
        calls = tuple(
            [_conform(tree, _at(present, (j,), n), f"{where}: endpoint {ep.name!r} call {n}")
             for j, tree in enumerate(ep.inputs)]
            for n in range(counts.pop())
        )
        found[ep.name] = Sampled(calls, f"sample_inputs {path}")
    return found


def _npz_keys(ep: Endpoint) -> dict[tuple[str | int, ...], str]:
    return {
        leaf.path: ep.name + "/" + "/".join(str(p) for p in leaf.path)
        for leaf in leaves(tuple(ep.inputs))
    }


def _at(arrays: Mapping[tuple[str | int, ...], np.ndarray], prefix: tuple[str | int, ...],
        call: int) -> Any:
    """The nest of row `call` of every array whose path starts with `prefix`."""
    if prefix in arrays:
        return arrays[prefix][call]
    # In the spec tree's order: `arrays` was built in Keras's flattening order.
    children = list(dict.fromkeys(p[len(prefix)] for p in arrays if p[: len(prefix)] == prefix))
    if all(isinstance(c, int) for c in children):
        return [_at(arrays, (*prefix, c), call) for c in children]
    return {str(c): _at(arrays, (*prefix, c), call) for c in children}


def _known(value: Mapping[Any, Any], endpoints: Sequence[Endpoint], where: str
           ) -> dict[str, Endpoint]:
    by_name = {ep.name: ep for ep in endpoints}
    for name in value:
        if name not in by_name:
            raise JobFailure(
                "SampleInputsError",
                f"{where}: the target has no endpoint {name!r}; its endpoints are "
                f"{sorted(by_name)}." + did_you_mean(str(name), by_name),
            )
    return by_name


def _conform(tree: SpecTree, value: Any, where: str) -> Any:
    """`value` as numpy arrays of the spec's dtypes, in the spec tree's structure."""
    if isinstance(tree, TensorSpec):
        if tree.dtype == "string":
            return np.vectorize(_text, otypes=[object])(np.asarray(value, dtype=object))
        try:
            return np.asarray(value).astype(tree.dtype)
        except (TypeError, ValueError) as err:
            raise JobFailure(
                "SampleInputsError", f"{where}: not convertible to {tree.dtype}: {err}"
            ) from err
    if isinstance(tree, SpecDict):
        keys = [k for k, _ in tree.items]
        if not isinstance(value, Mapping) or sorted(value) != sorted(keys):
            raise JobFailure(
                "SampleInputsError",
                f"{where}: expected a dict with keys {keys}. Received: {_short(value)}",
            )
        return {k: _conform(t, value[k], f"{where}[{k!r}]") for k, t in tree.items}
    if not isinstance(value, (list, tuple)) or len(value) != len(tree):
        raise JobFailure(
            "SampleInputsError",
            f"{where}: expected a list of {len(tree)}. Received: {_short(value)}",
        )
    return [_conform(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(tree, value,
                                                                             strict=True))]


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, np.ndarray) else f"array{value.shape}"
    return text if len(text) <= 60 else text[:57] + "..."
