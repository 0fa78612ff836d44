"""``Registry``: one table of names per concept (strategies, attacks, schemas, ...).

A registry lives here, in core, and is filled by the modules that define the things it
names: ``redfl.algorithms.registry`` registers the strategies, and so on. A registry
knows those modules by name (its *fillers*) and imports them on first read, so the config
can list the allowed names without core importing the layers above it at import time.

Examples
--------
>>> colours = Registry[int]("colour")
>>> colours.register("red", 1, warm=True)
1
>>> colours.names(), colours.get("red"), colours.meta("red")["warm"]
(['red'], 1, True)
>>> colours.get("blue")
Traceback (most recent call last):
...
redfl.core.registry.UnknownNameError: unknown colour 'blue'; choose one of ['red']
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def quote_choices(names: list[str]) -> str:
    """``'a', 'b' or 'c'``: names as an error message lists them (in the given order)."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the allowed names."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """Names of one concept, each with a value and free-form metadata.

    Parameters
    ----------
    concept:
        What the names are (``"strategy"``), used in error messages.
    fillers:
        Modules that register this concept's names; imported on first read.
    """

    def __init__(self, concept: str, fillers: Sequence[str] = ()) -> None:
        self.concept = concept
        self._fillers = list(fillers)
        self._values: dict[str, T] = {}
        self._meta: dict[str, Mapping[str, Any]] = {}
        self._filled = not self._fillers
        self._filling = False

    def add_filler(self, module: str) -> None:
        """Also import ``module`` (which registers names) before the next read."""
        if module not in self._fillers:
            self._fillers.append(module)
            self._filled = False

    def register(self, name: str, value: T, **meta: Any) -> T:
        """Register ``value`` as ``name`` (again with an equal value: no change); return it.

        Raises
        ------
        ValueError
            If ``name`` is empty or already names a different value.
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.concept} name must be a non-empty string, got {name!r}")
        known = self._values.get(name)
        if known is not None and known != value:
            raise ValueError(f"{self.concept} {name!r} is already registered as {known!r}")
        self._values[name] = value
        self._meta[name] = MappingProxyType(dict(meta))
        return value

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plugin unloaded, a test cleaning up); unknown names are ignored."""
        self._values.pop(name, None)
        self._meta.pop(name, None)

    def _fill(self) -> None:
        if self._filled or self._filling:
            return
        self._filling = True
        try:
            for module in list(self._fillers):
                importlib.import_module(module)
            self._filled = True
        finally:
            self._filling = False

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        self._fill()
        return list(self._values)

    def get(self, name: str) -> T:
        """The value registered as ``name``.

        Raises
        ------
        UnknownNameError
            Naming the concept, ``name`` and the allowed names.
        """
        self._fill()
        if name not in self._values:
            raise UnknownNameError(
                f"unknown {self.concept} {name!r}; choose one of {sorted(self._values)}"
            )
        return self._values[name]

    def meta(self, name: str) -> Mapping[str, Any]:
        """The metadata registered with ``name`` (read-only)."""
        self.get(name)
        return self._meta[name]

    def choices(self) -> str:
        """The names as an error message lists them: ``'a', 'b' or 'c'``."""
        return quote_choices(self.names())

    def __contains__(self, name: object) -> bool:
        self._fill()
        return name in self._values

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def items(self) -> list[tuple[str, T]]:
        """``(name, value)`` pairs in registration order."""
        self._fill()
        return list(self._values.items())

    def values(self) -> list[T]:
        """The values in registration order."""
        self._fill()
        return list(self._values.values())

    def __repr__(self) -> str:
        return f"Registry({self.concept!r}, {list(self._values)})"
