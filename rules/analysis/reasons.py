"""Why a target must be built: the difference between the key's inputs then and now, in words.

A changed file is named with the prefixes of its old and new digests, a
version change with both versions, and an attribute change structurally:
"endpoint 'serve_training' removed, 'train_mode' added" or
"endpoints[0].inputs[0].shape (None, 16) -> (None, 32)", never as a prefix
of two long reprs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Lists of dicts with a "name" are matched by name, so that adding an endpoint
# does not read as every later endpoint changing.
_NAMED = "name"
# Spec trees wrap tensors and dicts in {"tensor": ...} / {"dict": ...}: a
# user never wrote those words, so paths leave them out.
_WRAPPERS = ("tensor", "dict")


def explain(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Human-readable reasons why `new` differs from the inputs recorded in a manifest."""
    if not old:
        return ["no previous build"]
    reasons: list[str] = []
    for section in ("files", "code"):
        before, after = old.get(section, {}), new.get(section, {})
        for path in sorted(set(before) | set(after)):
            a, b = before.get(path), after.get(path)
            if a == b:
                continue
            if a is None:
                reasons.append(f"{path}: added ({b[:12]})")
            elif b is None:
                reasons.append(f"{path}: removed (was {a[:12]})")
            else:
                reasons.append(f"{path}: {a[:12]} -> {b[:12]}")
    for section in ("toolchain", "third_party", "format_tools"):
        before, after = old.get(section, {}), new.get(section, {})
        for name in sorted(set(before) | set(after)):
            if before.get(name) != after.get(name):
                reasons.append(f"{name}: {before.get(name)} -> {after.get(name)}")
    before_attrs, after_attrs = old.get("attrs", {}), new.get("attrs", {})
    for name in sorted(set(before_attrs) | set(after_attrs)):
        if before_attrs.get(name) != after_attrs.get(name):
            reasons.extend(
                f"attribute {change}"
                for change in diff(before_attrs.get(name), after_attrs.get(name), name)
            )
    for field in ("backend", "rules_keras", "schema", "kind"):
        if old.get(field) != new.get(field):
            reasons.append(f"{field}: {old.get(field)} -> {new.get(field)}")
    return reasons or ["artifact missing or modified"]


def diff(old: Any, new: Any, path: str) -> list[str]:
    """The smallest changes that turn `old` into `new`, each as `path: old -> new`."""
    if old == new:
        return []
    # Empty fields are left out of the key: absent and [] mean the same.
    if old is None:
        old = [] if isinstance(new, list) else {} if isinstance(new, Mapping) else None
    if new is None:
        new = [] if isinstance(old, list) else {} if isinstance(old, Mapping) else None
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        changes: list[str] = []
        for key in sorted(set(old) | set(new)):
            sub = path if key in _WRAPPERS else f"{path}.{key}"
            if key not in old:
                changes.append(f"{sub} added: {show(new[key])}")
            elif key not in new:
                changes.append(f"{sub} removed (was {show(old[key])})")
            else:
                changes.extend(diff(old[key], new[key], sub))
        return changes
    if _named_list(old) and _named_list(new) and (old or new):
        return _diff_named(old, new, path)
    if isinstance(old, list) and isinstance(new, list) and not _scalars(old, new):
        changes = [f"{path}: {len(old)} -> {len(new)} items"] if len(old) != len(new) else []
        for i, (a, b) in enumerate(zip(old, new, strict=False)):
            changes.extend(diff(a, b, f"{path}[{i}]"))
        return changes
    return [f"{path}: {show(old)} -> {show(new)}"]


def show(value: Any, limit: int = 80) -> str:
    """A value as a user wrote it: shapes and other lists of scalars as tuples; a long
    scalar is cut (the path already says where the change is)."""
    if isinstance(value, list) and _scalars(value):
        inner = ", ".join(show(v, limit) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _diff_named(old: list[Any], new: list[Any], path: str) -> list[str]:
    before = {item[_NAMED]: item for item in old}
    after = {item[_NAMED]: item for item in new}
    kind = path.rstrip("s") if path.endswith("s") else path
    removed = [n for n in before if n not in after]
    added = [n for n in after if n not in before]
    parts = []
    if removed:
        parts.append(f"{kind} {', '.join(repr(n) for n in removed)} removed")
    if added:
        parts.append(f"{', '.join(repr(n) for n in added)} added")
    changes = [", ".join(parts)] if parts else []
    common = [n for n in before if n in after]
    for name in common:
        index = list(after).index(name)
        changes.extend(diff(before[name], after[name], f"{path}[{index}]"))
    if not parts and [n for n in before if n in after] != [n for n in after if n in before]:
        changes.append(f"{path}: order {list(before)} -> {list(after)}")
    return changes


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, Mapping) and isinstance(item.get(_NAMED), str) for item in value
    )


def _scalars(*values: list[Any]) -> bool:
    return all(
        not isinstance(v, (list, Mapping)) for value in values for v in value
    )
