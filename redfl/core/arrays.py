"""Parameters as named numpy arrays, and the checks and sums done on them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

Parameters = dict[str, np.ndarray]
"""Model parameters: a name for each array (``{"weight": ..., "bias": ...}``)."""


def copy_parameters(parameters: Mapping[str, np.ndarray]) -> Parameters:
    """Return a deep copy of ``parameters`` (each array copied)."""
    return {name: np.array(array, copy=True) for name, array in parameters.items()}


def check_update(update: object, reference: Mapping[str, np.ndarray]) -> str | None:
    """Say why ``update`` cannot replace ``reference``, or return ``None`` when it can.

    An update must be a mapping with exactly the reference's names, each array of the
    reference's shape, numeric and finite (no NaN or infinity).
    """
    if not isinstance(update, Mapping):
        return f"parameters must be a mapping of name to array, got {type(update).__name__}"
    if update.keys() != reference.keys():
        missing = sorted(set(reference) - set(update))
        extra = sorted(set(update) - set(reference))
        return f"parameter names differ: missing {missing}, unexpected {extra}"
    for name, ref in reference.items():
        array = update[name]
        if not isinstance(array, np.ndarray):
            return f"parameter {name!r} is {type(array).__name__}, not a numpy array"
        if array.shape != ref.shape:
            return f"parameter {name!r} has shape {array.shape}, expected {ref.shape}"
        kind = array.dtype.kind
        if kind not in "fiuc":
            return f"parameter {name!r} has non-numeric dtype {array.dtype}"
        # One reduction answers the common case; only a non-finite sum needs the full check.
        if (
            kind in "fc"
            and not math.isfinite(abs(np.add.reduce(array, axis=None)))
            and not (np.isfinite(array).all())
        ):
            return f"parameter {name!r} contains NaN or infinity"
    return None


@dataclass
class WeightedSum:
    """A running sum of ``weight * parameters`` in float64, plus the total weight.

    Workers fold their clients' updates into one ``WeightedSum`` and return it, so the
    driver receives one partial sum per worker instead of one update per client.
    Sums are kept in float64 and folded in a fixed order, which makes the result
    independent of the order in which clients or workers finish.
    """

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    weight: float = 0.0
    count: int = 0
    _scratch: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def add(self, parameters: Mapping[str, np.ndarray], weight: float) -> None:
        """Fold ``weight * parameters`` into the sum (one reused buffer, no allocation)."""
        if not self.sums:
            self.sums = {k: np.zeros(v.shape, dtype=np.float64) for k, v in parameters.items()}
        for name, array in parameters.items():
            scratch = self._scratch.get(name)
            if scratch is None or scratch.shape != array.shape:
                scratch = self._scratch[name] = np.empty(array.shape, np.float64)
            np.multiply(array, weight, out=scratch, dtype=np.float64)
            np.add(self.sums[name], scratch, out=self.sums[name])
        self.weight += weight
        self.count += 1

    def __getstate__(self) -> dict[str, object]:
        """Pickle without the scratch buffer (a partial sum travels to the driver)."""
        return {"sums": self.sums, "weight": self.weight, "count": self.count, "_scratch": {}}

    def merge(self, other: WeightedSum) -> None:
        """Fold another partial sum into this one."""
        if other.count == 0:
            return
        if not self.sums:
            self.sums = {k: np.zeros_like(v) for k, v in other.sums.items()}
        for name, array in other.sums.items():
            self.sums[name] += array
        self.weight += other.weight
        self.count += other.count

    def mean(self, like: Mapping[str, np.ndarray]) -> Parameters:
        """The weighted mean, cast to the dtypes of ``like``."""
        if self.weight <= 0:
            raise ValueError("cannot average: total weight is 0")
        return {k: (self.sums[k] / self.weight).astype(like[k].dtype) for k in like}
