"""A small name → object registry whose lookup errors suggest close names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from evalharness.core.errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, candidates: list[str], limit: int = 5) -> str:
    close = difflib.get_close_matches(name, candidates, n=limit, cutoff=0.6)
    if not close:
        close = [c for c in candidates if name.lower() in c.lower()][:limit]
    return f"; did you mean: {', '.join(close)}?" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint  # e.g. "see `evalharness tasks`", appended to lookup errors
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            suffix = f" ({self.hint})" if self.hint else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}{suffix}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
