"""``StrategyWrapper``: a strategy that delegates every hook to an inner strategy.

Differential privacy and attack simulation wrap a strategy instead of copying it; a
wrapper overrides only the hooks it changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from redfl.algorithms.strategy import ClientUpdate, EvaluateReport, RoundOutcome, Strategy
from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters, WeightedSum


class StrategyWrapper(Strategy):
    """Delegates to ``inner``; sampling settings are the inner strategy's.

    Parameters
    ----------
    inner:
        The wrapped strategy.
    """

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self.weighted_sum = inner.weighted_sum
        self.fraction_fit = inner.fraction_fit
        self.min_fit_clients = inner.min_fit_clients
        self.fraction_evaluate = inner.fraction_evaluate
        self.min_evaluate_clients = inner.min_evaluate_clients
        self.max_update_norm = inner.max_update_norm

    def check_round_size(self, clients: int) -> None:
        """The inner strategy's check."""
        self.inner.check_round_size(clients)

    def configure_fit(
        self, rnd: int, available: Sequence[str], rng: np.random.Generator
    ) -> list[str]:
        """The inner strategy's sample."""
        return self.inner.configure_fit(rnd, available, rng)

    def configure_evaluate(
        self, rnd: int, available: Sequence[str], rng: np.random.Generator
    ) -> list[str]:
        """The inner strategy's evaluation sample."""
        return self.inner.configure_evaluate(rnd, available, rng)

    def fit_config(self, rnd: int) -> Mapping[str, Any]:
        """The inner strategy's fit instructions."""
        return self.inner.fit_config(rnd)

    def evaluate_config(self, rnd: int) -> Mapping[str, Any]:
        """The inner strategy's evaluation instructions."""
        return self.inner.evaluate_config(rnd)

    def client_config(self, rnd: int, node_id: str) -> dict[str, Any]:
        """The inner strategy's per-client config."""
        return self.inner.client_config(rnd, node_id)

    def update_policy(self, rnd: int, sampled: Sequence[str]) -> UpdatePolicy:
        """The inner strategy's policy."""
        return self.inner.update_policy(rnd, sampled)

    def aggregate(self, rnd: int, current: Parameters, total: WeightedSum) -> Parameters:
        """The inner strategy's aggregate."""
        return self.inner.aggregate(rnd, current, total)

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        """The inner strategy's aggregate of individual updates."""
        return self.inner.aggregate_updates(rnd, current, updates)

    def aggregate_evaluate(
        self, rnd: int, reports: Sequence[EvaluateReport]
    ) -> tuple[float | None, dict[str, float]]:
        """The inner strategy's evaluation aggregate."""
        return self.inner.aggregate_evaluate(rnd, reports)

    def end_round(self, outcome: RoundOutcome) -> None:
        """The inner strategy's end of round."""
        self.inner.end_round(outcome)

    def state(self) -> dict[str, Any]:
        """``{"inner": the inner strategy's state}``."""
        return {"inner": self.inner.state()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore the inner strategy's state."""
        self.inner.load_state(state["inner"])

    def round_metrics(self, rnd: int, stats: Mapping[str, float]) -> dict[str, float]:
        """The inner strategy's round metrics."""
        return self.inner.round_metrics(rnd, stats)
