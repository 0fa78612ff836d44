"""Per-client handling of an update where it is produced (on the worker).

An :class:`UpdatePolicy` travels with a round's fit request. For every client it gives
the config (the round's, plus the client's own), rejects an update whose dtype differs
from the global model's or whose norm exceeds a bound (with a reason), and, for
client-side differential privacy, clips the update before the worker folds it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions


def update_norm(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of ``update - reference`` over all arrays, in float64."""
    total = 0.0
    for name, ref in reference.items():
        delta = np.subtract(update[name], ref, dtype=np.float64)
        total += float(np.vdot(delta, delta))
    return math.sqrt(total)


def clip_update(
    update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], norm: float, bound: float
) -> Parameters:
    """``reference + (update - reference) * min(1, bound / norm)`` in the reference dtypes."""
    if norm <= bound:
        return dict(update)
    scale = bound / norm
    return {
        k: (ref + np.subtract(update[k], ref, dtype=np.float64) * scale).astype(ref.dtype)
        for k, ref in reference.items()
    }


@dataclass(frozen=True)
class UpdatePolicy:
    """What a worker does with each client's fit: config, checks, optional clipping.

    Attributes
    ----------
    max_update_norm:
        Reject an update whose distance to the global model exceeds this (L2).
    clip_norm:
        Clip every update's distance to the global model to this (client-side DP).
    equal_weights:
        Fold updates with weight 1 instead of their number of examples (DP).
    per_client:
        Config entries for single clients, merged over the round's config.
    """

    max_update_norm: float | None = None
    clip_norm: float | None = None
    equal_weights: bool = False
    per_client: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def config_for(self, node_id: str, config: Mapping[str, Any]) -> Any:
        """The config client ``node_id`` receives: the round's, with its own keys over it.

        :class:`~redfl.core.instructions.Instructions` stay typed (``merged``); a plain
        mapping gives a new dict.
        """
        extra = self.per_client.get(node_id)
        if isinstance(config, Instructions):
            return config.merged(extra) if extra else config
        return {**config, **extra} if extra else dict(config)

    def apply(
        self, update: Parameters, reference: Mapping[str, np.ndarray], num_examples: int
    ) -> tuple[Parameters, float, dict[str, float], str | None]:
        """Check (and maybe clip) a shape-checked finite update.

        Returns
        -------
        (parameters, weight, stats, reason):
            ``reason`` is ``None`` when the update is accepted; ``stats`` holds counters
            the driver sums (``unclipped``: 1 when the update was within ``clip_norm``).
        """
        for name, ref in reference.items():
            if update[name].dtype != ref.dtype:
                return (
                    update,
                    0.0,
                    {},
                    (f"parameter {name!r} has dtype {update[name].dtype}, expected {ref.dtype}"),
                )
        weight = 1.0 if self.equal_weights else float(num_examples)
        if self.max_update_norm is None and self.clip_norm is None:
            return update, weight, {}, None
        norm = update_norm(update, reference)
        if self.max_update_norm is not None and norm > self.max_update_norm:
            return (
                update,
                0.0,
                {},
                (f"update norm {norm:.4g} exceeds max_update_norm {self.max_update_norm:.4g}"),
            )
        if self.clip_norm is None:
            return update, weight, {}, None
        stats = {"unclipped": float(norm <= self.clip_norm)}
        return clip_update(update, reference, norm, self.clip_norm), weight, stats, None
