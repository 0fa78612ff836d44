"""Hooks into the round loop: progress, logging, checkpoints, early stopping.

Nobody overrides the loop to add these; they subclass :class:`Callback`.
"""

from __future__ import annotations

from collections.abc import Mapping

from redfl.core.arrays import Parameters
from redfl.core.result import FederationResult, RoundRecord


class Callback:
    """Base class: override the events you need (all are no-ops here)."""

    def on_train_begin(self, rounds: int) -> None:
        """Before the first round."""

    def on_round_begin(self, rnd: int, sampled: int) -> None:
        """A round sampled ``sampled`` clients and is about to dispatch them."""

    def on_clients_done(self, rnd: int, done: int, sampled: int) -> None:
        """``done`` of the round's ``sampled`` clients have finished fitting."""

    def on_aggregate(self, rnd: int, parameters: Parameters) -> None:
        """Round ``rnd`` produced new global ``parameters`` (read them, do not modify)."""

    def on_metrics(self, rnd: int, metrics: Mapping[str, float]) -> None:
        """Round ``rnd``'s metrics (evaluation, client means, strategy's such as epsilon)."""

    def on_round_end(self, record: RoundRecord) -> bool | None:
        """A round ended; return ``True`` to stop training after it."""
        return None

    def on_train_end(self, result: FederationResult) -> None:
        """After the last round."""
