"""Search spaces for tuning: ``--param PATH=KIND:ARGS`` specs and how a trial applies them.

A spec names a value of the config by its dotted path into the config's tables
(``strategy.eta``, ``client.options.lr``) and a distribution to draw it from:

==================  =================================================================
``uniform:a:b``     a float drawn uniformly from [a, b]
``loguniform:a:b``  a float whose logarithm is uniform in [log a, log b] (0 < a < b)
``randint:a:b``     an integer in [a, b) (a < b)
``choice:x,y,...``  one of the values, drawn at random
``grid:x,y,...``    every value, each in its own trial (times ``--samples``)
==================  =================================================================

Values of ``choice`` and ``grid`` are read as TOML scalars would be: ``true``/``false``,
integers, floats, else strings. Pure functions: the Ray-facing part is
:mod:`redfl.runtime.tune`.

Examples
--------
>>> spec = parse_param("client.options.lr=choice:0.1,0.3")
>>> spec.path, spec.kind, spec.values
(('client', 'options', 'lr'), 'choice', (0.1, 0.3))
>>> apply_params({"client": {"options": {"lr": 0.5}}}, {"client.options.lr": 0.1})
{'client': {'options': {'lr': 0.1}}}
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["uniform", "loguniform", "randint", "choice", "grid"]
KINDS: dict[str, Kind] = {k: k for k in ("uniform", "loguniform", "randint", "choice", "grid")}
ALLOWED_FORMS = "uniform:a:b, loguniform:a:b, choice:x,y, randint:a:b, grid:x,y"
"""The forms a ``--param`` value may take (named in every error)."""

Scalar = bool | int | float | str
_PATH = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)+$")


class SearchSpaceError(ValueError):
    """A ``--param`` spec that cannot be parsed or applied; the message names it."""


@dataclass(frozen=True)
class ParamSpec:
    """One searched value: where it goes in the config and how it is drawn.

    Attributes
    ----------
    path:
        The dotted path into the config's tables, split (``("strategy", "eta")``).
    kind:
        ``uniform``, ``loguniform``, ``randint``, ``choice`` or ``grid``.
    low, high:
        The bounds of ``uniform``, ``loguniform`` and ``randint``.
    values:
        The values of ``choice`` and ``grid``.
    """

    path: tuple[str, ...]
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    values: tuple[Scalar, ...] = ()

    @property
    def name(self) -> str:
        """The dotted path, as written in the spec (``"strategy.eta"``)."""
        return ".".join(self.path)


def _error(spec: str, reason: str) -> SearchSpaceError:
    return SearchSpaceError(f"--param {spec!r}: {reason}; allowed forms: {ALLOWED_FORMS}")


def _number(spec: str, text: str, integer: bool = False) -> float:
    try:
        value = float(int(text)) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise _error(spec, f"{text!r} is not {kind}") from None
    if not math.isfinite(value):
        raise _error(spec, f"{text!r} is not a finite number")
    return value


def scalar(text: str) -> Scalar:
    """``text`` read as a TOML scalar would be: bool, int, float, else the string itself."""
    lowered = text.strip()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(lowered)
        except ValueError:
            continue
    return lowered


def parse_param(spec: str) -> ParamSpec:
    """Parse one ``PATH=KIND:ARGS`` spec.

    Raises
    ------
    SearchSpaceError
        Naming the spec and the allowed forms.
    """
    path, equals, body = spec.partition("=")
    path = path.strip()
    if not equals or not _PATH.match(path):
        raise _error(spec, "expected PATH=KIND:ARGS with a dotted PATH such as strategy.eta")
    word, colon, args = body.strip().partition(":")
    if not colon or not args:
        raise _error(spec, f"no arguments after {word!r}")
    kind = KINDS.get(word)
    if kind is None:
        raise _error(spec, f"unknown kind {word!r}")
    parts = tuple(path.split("."))
    if kind == "choice" or kind == "grid":
        items = [item.strip() for item in args.split(",")]
        if any(not item for item in items):
            raise _error(spec, "an empty value in the list")
        return ParamSpec(parts, kind, values=tuple(scalar(item) for item in items))
    bounds = args.split(":")
    if len(bounds) != 2:
        raise _error(spec, f"{kind} takes two bounds a:b, got {args!r}")
    integer = kind == "randint"
    low, high = (_number(spec, b.strip(), integer) for b in bounds)
    if not low < high:
        raise _error(spec, f"the lower bound {low:g} must be below the upper bound {high:g}")
    if kind == "loguniform" and low <= 0:
        raise _error(spec, f"loguniform bounds must be positive, got {low:g}")
    return ParamSpec(parts, kind, low, high)


def parse_params(specs: Sequence[str]) -> list[ParamSpec]:
    """Parse every spec; a path given twice is an error."""
    parsed = [parse_param(spec) for spec in specs]
    names = [p.name for p in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SearchSpaceError(f"--param: {repeated[0]!r} is given more than once")
    return parsed


def example_values(params: Sequence[ParamSpec]) -> dict[str, Scalar]:
    """One admissible value per parameter (the lower bound or the first value), to
    validate the config a trial will build before any trial starts."""
    values: dict[str, Scalar] = {}
    for param in params:
        if param.values:
            values[param.name] = param.values[0]
        else:
            values[param.name] = int(param.low) if param.kind == "randint" else param.low
    return values


def apply_params(config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``config`` with each dotted path of ``values`` set.

    Missing tables on the way are created; a path through a value that is not a table is
    an error.

    Raises
    ------
    SearchSpaceError
        If a path runs through a value that is not a table.
    """
    result = copy.deepcopy(dict(config))
    for name, value in values.items():
        *tables, key = name.split(".")
        here: dict[str, Any] = result
        for i, table in enumerate(tables):
            inner = here.setdefault(table, {})
            if not isinstance(inner, dict):
                where = ".".join(tables[: i + 1])
                raise SearchSpaceError(f"--param {name!r}: {where!r} is a value, not a table")
            here = inner
        here[key] = value
    return result
