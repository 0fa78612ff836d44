"""Split a tree of values into JSON and named arrays, and join them back bit-exact.

Every numpy array (and numpy scalar) in a tree of dicts, lists and tuples is replaced by a
reference ``{"$array": key}`` and stored under ``key``: the tree's path to it, its parts
joined by ``/`` (``~`` and ``/`` inside a part escaped as ``~0`` and ``~1``), so keys are
stable and readable (``strategy_state/inner/m/dense.weight``). Floats are written as
Python's shortest repr, which reads back to the same bits; non-finite floats, tuples and
dicts whose keys could be mistaken for a reference are marked too.

Examples
--------
>>> import numpy as np
>>> arrays = {}
>>> tree = encode({"m": {"w": np.ones(2)}, "steps": 3}, "state", arrays)
>>> tree, sorted(arrays)
({'m': {'w': {'$array': 'state/m/w'}}, 'steps': 3}, ['state/m/w'])
>>> decode(tree, arrays)["m"]["w"]
array([1., 1.])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

SUPPORTED_KINDS = "biuf"
"""Array dtype kinds that round-trip through safetensors (bool, ints, floats)."""


def escape(part: str) -> str:
    """One path part, with ``~`` and ``/`` escaped."""
    return part.replace("~", "~0").replace("/", "~1")


def _array(value: np.ndarray, path: str) -> np.ndarray:
    if value.dtype.kind not in SUPPORTED_KINDS or value.dtype.byteorder == ">":
        raise TypeError(
            f"{path}: cannot store an array of dtype {value.dtype} (bool, int, uint or "
            "little-endian float arrays only)"
        )
    return value if value.flags.c_contiguous else value.copy(order="C")


def encode(value: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """The JSON-ready form of ``value``; its arrays go into ``arrays`` under their paths.

    Raises
    ------
    TypeError
        For a value that is not a number, string, bool, ``None``, array, or a dict (with
        string keys), list or tuple of them; the message names its path.
    """
    if isinstance(value, np.ndarray | np.generic):
        arrays[path] = _array(np.asarray(value), path)
        return {"$scalar" if isinstance(value, np.generic) else "$array": path}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: dict keys must be strings, got {key!r}")
            out[key] = encode(item, f"{path}/{escape(key)}", arrays)
        return {"$dict": out} if any(k.startswith("$") for k in out) else out
    if isinstance(value, list | tuple):
        items = [encode(item, f"{path}/{i}", arrays) for i, item in enumerate(value)]
        return {"$tuple": items} if isinstance(value, tuple) else items
    raise TypeError(f"{path}: cannot store a {type(value).__name__} in a checkpoint")


def decode(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """The value :func:`encode` turned into ``tree`` (arrays looked up in ``arrays``).

    Raises
    ------
    KeyError
        If ``tree`` refers to an array that ``arrays`` lacks.
    """
    if isinstance(tree, list):
        return [decode(item, arrays) for item in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1:
        ((marker, inner),) = tree.items()
        if marker == "$array":
            return arrays[inner]
        if marker == "$scalar":
            return arrays[inner][()]
        if marker == "$float":
            return float(inner)
        if marker == "$tuple":
            return tuple(decode(item, arrays) for item in inner)
        if marker == "$dict":
            return {k: decode(v, arrays) for k, v in inner.items()}
    return {k: decode(v, arrays) for k, v in tree.items()}
