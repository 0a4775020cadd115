"""Action keys: sha256 over canonical JSON of everything that can change an artifact."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rules
from rules.analysis.graph import ARTIFACTS, Action
from rules.analysis.imports import ImportScanner
from rules.core.digests import DigestCache
from rules.core.formats import EXPORT_FORMATS
from rules.core.hashing import sha256_json
from rules.core.job import DeclaredInputs, ExportJob, TrainJob
from rules.core.toolchain import Toolchain

# Bump when the meaning of a key input changes, so old cache entries stop matching.
# 3: cache entries carry record version 2 (their key, label and output list);
# old entries would only be refused, with a warning each, so they are not asked for.
KEY_SCHEMA = 3


@dataclass(frozen=True)
class ActionKey:
    """The key and the document it hashes; the document is kept to explain rebuilds."""

    digest: str
    inputs: Mapping[str, Any]


class InputMissing(Exception):
    """An input file is gone (e.g. a producing target has not been built yet)."""


def code_modules(action: Action) -> list[str]:
    """Modules whose code runs during the action: factory, train function, endpoint fns,
    the function giving the parity check's sample inputs, and .py files listed in `data`.

    A module imported dynamically is listed in `data` (the audit's fix); as a
    root of the closure, what it imports statically is hashed with it.
    """
    job = action.job
    refs = [job.factory]
    if isinstance(job, TrainJob):
        refs.append(job.train)
    else:
        refs.extend(ep.fn for ep in job.endpoints if ":" in ep.fn)
        if job.sample_inputs is not None:
            refs.append(job.sample_inputs)
    modules = {ref.partition(":")[0] for ref in refs}
    for rel in action.inputs:
        parts = rel.removesuffix(".py").split("/")
        if rel.endswith(".py") and all(p.isidentifier() for p in parts):
            modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(m for m in modules if m)


def attributes(action: Action) -> dict[str, Any]:
    """What the action does, as the key hashes it: the job's key attributes.

    The kind and the backend are kept apart from the rest, as top-level
    fields of the key's document, so that explain() can name them plainly.
    """
    attrs = action.job.key_attributes()
    for field in ("kind", "backend"):
        attrs.pop(field)
    return attrs


def format_tools(action: Action) -> dict[str, str]:
    """Converter and runtime versions of a non-SavedModel export; empty otherwise."""
    job = action.job
    if not isinstance(job, ExportJob):
        return {}
    return EXPORT_FORMATS[job.format].tool_versions()


def compute(
    action: Action,
    root: Path,
    digests: DigestCache,
    scanner: ImportScanner,
    toolchain: Toolchain,
) -> ActionKey:
    """Hash the action's inputs; raises InputMissing if an input file does not exist."""
    files: dict[str, str] = {}
    for rel in action.inputs:
        try:
            files[rel] = digests.digest(root / rel)
        except FileNotFoundError as err:
            raise InputMissing(rel) from err
    closure = scanner.closure(code_modules(action))
    inputs = {
        "schema": KEY_SCHEMA,
        "rules_keras": rules.__version__,
        "kind": action.job.kind,
        "backend": action.job.backend,
        "attrs": attributes(action),
        "files": files,
        "code": dict(closure.files),
        "toolchain": toolchain.to_json(),
        "third_party": toolchain.third_party(closure.third_party),
    }
    tools = format_tools(action)
    if tools:
        inputs["format_tools"] = tools
    return ActionKey(sha256_json(inputs), inputs)


def declared_inputs(
    action: Action, key: ActionKey, ignored: tuple[str, ...] = ()
) -> DeclaredInputs:
    """What the job may read without it being reported as undeclared: every file whose
    digest `key` holds (weights, data, sample_inputs, the code closure). Reads under
    artifacts/ and the `ignored` folders (the state folder) never count."""
    return DeclaredInputs(
        files=tuple(sorted({*key.inputs["files"], *key.inputs["code"]})),
        owner=str(action.data_owner),
        ignored=(ARTIFACTS, *ignored),
    )
