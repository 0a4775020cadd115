"""FrozenMap: an immutable, hashable mapping of JSON-like values, for options in frozen values."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class FrozenMap(Mapping[str, Any]):
    """A read-only dict whose values are frozen too (lists become tuples, dicts FrozenMaps).

    Options such as format_options travel inside frozen dataclasses (targets,
    jobs) that are compared and hashed; a plain dict inside would make them
    neither. `thaw()` gives back plain JSON data for the wire and for hashing.
    """

    __slots__ = ("_items",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        items = {} if data is None else data
        self._items: tuple[tuple[str, Any], ...] = tuple(
            sorted((str(k), freeze(v)) for k, v in items.items())
        )

    def __getitem__(self, key: str) -> Any:
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __repr__(self) -> str:
        return f"FrozenMap({thaw(self)!r})"

    def thaw(self) -> dict[str, Any]:
        result: dict[str, Any] = thaw(self)
        return result


def freeze(value: Any) -> Any:
    """The hashable form of a JSON-like value."""
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, Mapping):
        return FrozenMap(value)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain JSON data (dicts and lists) from a frozen value."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value
