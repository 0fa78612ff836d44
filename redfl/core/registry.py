"""``Registry``: one table of names per concept (strategies, attacks, schemas, ...).

The class lives here, in core; each registry lives with the things it names, in the layer
that defines them (the strategies' in :mod:`redfl.algorithms.registry`, the schemas' in
:mod:`redfl.schemas.registry`, ...), and is filled as that module is imported. An entry
carries the object that builds its thing (a class, a factory) and, where a config table
chooses it, the model that table accepts; the config reads the allowed names from the
registry, never from a second list.

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

from collections.abc import Callable, Iterator, Mapping
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
    """

    def __init__(self, concept: str) -> None:
        self.concept = concept
        self._values: dict[str, T] = {}
        self._meta: dict[str, Mapping[str, Any]] = {}

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

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._values)

    def get(self, name: str) -> T:
        """The value registered as ``name``.

        Raises
        ------
        UnknownNameError
            Naming the concept, ``name`` and the allowed names.
        """
        if name not in self._values:
            raise UnknownNameError(
                f"unknown {self.concept} {name!r}; choose one of {sorted(self._values)}"
            )
        return self._values[name]

    def meta(self, name: str) -> Mapping[str, Any]:
        """The metadata registered with ``name`` (read-only)."""
        self.get(name)
        return self._meta[name]

    def validate(self, name: str, *, also: tuple[str, ...] = ()) -> str:
        """Return ``name`` if it is registered (or one of ``also``): a config field's check.

        Raises
        ------
        ValueError
            ``Input should be 'a', 'b' or 'c'``, listing the allowed names (as pydantic
            words a bad literal, so that a config error reads the same for both).
        """
        if name in also or name in self._values:
            return name
        raise ValueError(f"Input should be {quote_choices([*also, *self.names()])}")

    def validator(self, *, also: tuple[str, ...] = ()) -> Callable[[str], str]:
        """:meth:`validate` as a config field's check:
        ``name: Annotated[str, AfterValidator(REGISTRY.validator())]``."""
        return lambda name: self.validate(name, also=also)

    def choices(self) -> str:
        """The names as an error message lists them: ``'a', 'b' or 'c'``."""
        return quote_choices(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def items(self) -> list[tuple[str, T]]:
        """``(name, value)`` pairs in registration order."""
        return list(self._values.items())

    def values(self) -> list[T]:
        """The values in registration order."""
        return list(self._values.values())

    def __repr__(self) -> str:
        return f"Registry({self.concept!r}, {list(self._values)})"
