"""A switch's compiled entries as a shared base and the entries changed since. Pure.

After a link event a few thousand (switch, destination) entries change across a large fabric, a few
dozen per touched switch, while each switch holds an entry per endpoint (500 and more). Copying each
touched switch's whole mapping to change a few entries of it cost more than the change (at 500
switches: ~1.3 of ~5 ms of recompiling, in the copies and in freeing them again). A ``LayeredEntries``
shares the previous mapping as its base and holds only the changed entries on top; once the top
holds a quarter of the base it is folded into a new plain dict, so reads stay two lookups at most
and the copies are amortized.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from typing import Any, TypeVar, cast

V = TypeVar("V")
MISSING: Any = object()
FOLD_FRACTION = 4  # fold the top into a new base once it holds this fraction (1/4) of the base


class LayeredEntries(Mapping[str, V]):
    """``base`` with ``top`` over it; a key whose top value is None is removed. Never changed."""

    __slots__ = ("_size", "base", "top")

    def __init__(self, base: Mapping[str, V], top: dict[str, V | None], size: int) -> None:
        self.base = base
        self.top = top
        self._size = size

    def __getitem__(self, key: str) -> V:
        value = self.top.get(key, MISSING)
        if value is MISSING:
            return self.base[key]
        if value is None:
            raise KeyError(key)
        return cast(V, value)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.top.get(key, MISSING)
        if value is MISSING:
            return self.base.get(key, default)
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        value = self.top.get(key, MISSING)  # type: ignore[call-overload]
        return key in self.base if value is MISSING else value is not None

    def __iter__(self) -> Iterator[str]:
        top = self.top
        for key in self.base:
            if key not in top:
                yield key
        for key, value in top.items():
            if value is not None:
                yield key

    def __len__(self) -> int:
        return self._size

    def items(self) -> ItemsView[str, V]:
        return _Items(self)

    def values(self) -> ValuesView[V]:
        return _Values(self)

    def __repr__(self) -> str:
        return f"LayeredEntries({len(self)} entries, {len(self.top)} changed)"


class _Items(ItemsView[str, V]):
    _mapping: LayeredEntries[V]

    def __iter__(self) -> Iterator[tuple[str, V]]:
        layered = self._mapping
        top = layered.top
        for key, value in layered.base.items():
            if key not in top:
                yield key, value
        for key, changed in top.items():
            if changed is not None:
                yield key, changed


class _Values(ValuesView[V]):
    _mapping: LayeredEntries[V]

    def __iter__(self) -> Iterator[V]:
        layered = self._mapping
        top = layered.top
        for key, value in layered.base.items():
            if key not in top:
                yield value
        for changed in top.values():
            if changed is not None:
                yield changed


def layers(entries: Mapping[str, V]) -> tuple[Mapping[str, V], dict[str, V | None]]:
    """The base and the changes on top of ``entries`` (a plain mapping is all base)."""
    if isinstance(entries, LayeredEntries):
        return entries.base, entries.top
    return entries, {}


def with_changes(entries: Mapping[str, V], changes: Mapping[str, V | None]) -> Mapping[str, V]:
    """``entries`` with ``changes`` set (None: removed), sharing ``entries`` rather than copying it."""
    if not changes:
        return entries
    base, top = layers(entries)
    size = len(entries)
    for key, value in changes.items():
        before = top.get(key, MISSING)
        present = key in base if before is MISSING else before is not None
        size += (value is not None) - present
    merged = {**top, **changes}
    if len(merged) * FOLD_FRACTION <= len(base):
        return LayeredEntries(base, merged, size)
    folded = dict(base)
    for key, value in merged.items():
        if value is None:
            folded.pop(key, None)
        else:
            folded[key] = value
    return folded
