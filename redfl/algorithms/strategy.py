"""The strategy interface: the server-side math of a star round.

A strategy has four hooks: :meth:`Strategy.configure_fit` (which clients, and each one's
instructions through :meth:`Strategy.fit_config` and :meth:`Strategy.client_config`),
:meth:`Strategy.aggregate` / :meth:`Strategy.aggregate_updates`,
:meth:`Strategy.configure_evaluate` (with :meth:`Strategy.evaluate_config`) and
:meth:`Strategy.aggregate_evaluate`.

State changes only in the aggregation hooks and in :meth:`Strategy.end_round`, which the
schema calls once per round after aggregating; every other hook (sampling, configs,
policies, :meth:`Strategy.round_metrics`) only reads, so calling it twice changes nothing.

Strategies whose aggregate is an example-weighted sum set ``weighted_sum = True``: the
runtime then lets every worker fold its clients into one partial sum
(:class:`~redfl.core.arrays.WeightedSum`) and hands the strategy the total. Other
strategies (median, Krum, ...) receive individual updates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.instructions import Instructions

EvaluateReport = tuple[str, float, int, dict[str, float]]
"""One client's evaluation: (node id, loss, examples, metrics)."""


class ParameterError(ValueError):
    """A strategy parameter is out of its bounds; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.detail = message


def require(ok: bool, parameter: str, message: str) -> None:
    """Raise :class:`ParameterError` for ``parameter`` unless ``ok``."""
    if not ok:
        raise ParameterError(parameter, message)


@dataclass(frozen=True)
class ClientUpdate:
    """One client's reply to a fit request."""

    node_id: str
    parameters: Parameters
    num_examples: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class RoundOutcome:
    """What the schema tells :meth:`Strategy.end_round` about a finished fit round.

    Attributes
    ----------
    round:
        The round number.
    available:
        Clients :meth:`Strategy.configure_fit` sampled from.
    sampled:
        Clients it sampled.
    succeeded:
        Clients whose update was aggregated.
    stats:
        Counters the workers summed under the round's :class:`UpdatePolicy` (for
        client-side DP: ``unclipped``).
    """

    round: int
    available: int
    sampled: int
    succeeded: int
    stats: Mapping[str, float] = field(default_factory=dict)


def round_size(available: int, fraction: float, minimum: int) -> int:
    """How many of ``available`` clients a round samples: ``max(minimum, ceil(fraction * n))``,
    at most ``n``.

    Examples
    --------
    >>> round_size(100, 0.1, 1), round_size(100, 0.0, 5), round_size(3, 1.0, 5)
    (10, 5, 3)
    """
    return min(available, max(minimum, math.ceil(fraction * available - 1e-9)))


def sample_clients(
    available: Sequence[str], fraction: float, minimum: int, rng: np.random.Generator
) -> list[str]:
    """Pick ``max(minimum, ceil(fraction * n))`` of ``available`` without replacement.

    The result keeps the order of ``available`` so that downstream folding is fixed.

    Raises
    ------
    ValueError
        If fewer than ``minimum`` clients are available.
    """
    n = len(available)
    if n < minimum:
        raise ValueError(f"{minimum} clients required but only {n} available")
    k = round_size(n, fraction, minimum)
    if k == n:
        return list(available)
    picked = np.sort(rng.choice(n, size=k, replace=False))
    return [available[i] for i in picked]


def weighted_evaluation(reports: Sequence[EvaluateReport]) -> tuple[float | None, dict[str, float]]:
    """Example-weighted mean loss and metrics of evaluation reports (``None`` if empty)."""
    examples = sum(n for _, _, n, _ in reports)
    if not examples:
        return None, {}
    loss = sum(n * value for _, value, n, _ in reports) / examples
    names = sorted({k for _, _, _, m in reports for k in m})
    metrics = {
        k: sum(n * m[k] for _, _, n, m in reports if k in m)
        / max(1, sum(n for _, _, n, m in reports if k in m))
        for k in names
    }
    return loss, metrics


class Strategy:
    """Base class for strategies.

    Subclasses override :meth:`aggregate` (weighted-sum strategies) or
    :meth:`aggregate_updates` (strategies that need every update), and any other hook.

    Parameters
    ----------
    fraction_fit, min_fit_clients:
        Each round trains ``max(min_fit_clients, ceil(fraction_fit * n))`` clients, and
        fails unless at least ``min_fit_clients`` of them succeed.
    fraction_evaluate, min_evaluate_clients:
        The same for federated evaluation (none by default).
    max_update_norm:
        Optional bound on the L2 norm of ``update - global``; a client above it is
        rejected with the reason recorded.
    """

    weighted_sum: bool = True
    """Whether the aggregate is a function of the example-weighted sum of updates."""

    def __init__(
        self,
        *,
        fraction_fit: float = 1.0,
        min_fit_clients: int = 1,
        fraction_evaluate: float = 0.0,
        min_evaluate_clients: int = 0,
        max_update_norm: float | None = None,
    ) -> None:
        require(
            0.0 <= fraction_fit <= 1.0, "fraction_fit", f"must be in [0, 1], got {fraction_fit}"
        )
        require(
            0.0 <= fraction_evaluate <= 1.0,
            "fraction_evaluate",
            f"must be in [0, 1], got {fraction_evaluate}",
        )
        require(min_fit_clients >= 1, "min_fit_clients", f"must be >= 1, got {min_fit_clients}")
        require(
            min_evaluate_clients >= 0,
            "min_evaluate_clients",
            f"must be >= 0, got {min_evaluate_clients}",
        )
        require(
            max_update_norm is None or 0 < max_update_norm < math.inf,
            "max_update_norm",
            f"must be > 0 and finite, got {max_update_norm}",
        )
        self.fraction_fit = fraction_fit
        self.min_fit_clients = min_fit_clients
        self.fraction_evaluate = fraction_evaluate
        self.min_evaluate_clients = min_evaluate_clients
        self.max_update_norm = max_update_norm

    def check_round_size(self, clients: int) -> None:
        """Raise :class:`ParameterError` if rounds of ``clients`` clients cannot work."""

    def configure_fit(
        self, rnd: int, available: Sequence[str], rng: np.random.Generator
    ) -> list[str]:
        """The clients that train in round ``rnd``."""
        return sample_clients(available, self.fraction_fit, self.min_fit_clients, rng)

    def configure_evaluate(
        self, rnd: int, available: Sequence[str], rng: np.random.Generator
    ) -> list[str]:
        """The clients that evaluate in round ``rnd`` (none by default)."""
        if self.fraction_evaluate == 0.0 and self.min_evaluate_clients == 0:
            return []
        return sample_clients(available, self.fraction_evaluate, self.min_evaluate_clients, rng)

    def fit_config(self, rnd: int) -> Mapping[str, Any]:
        """The instructions sent to every client that trains in round ``rnd``.

        A plain mapping or :class:`~redfl.core.instructions.Instructions`; typed keys
        (``learning_rate``, ``proximal_mu``, ``local_epochs``) become its fields and the
        schema sets ``round`` (:meth:`Instructions.make`).
        """
        return Instructions.make(rnd)

    def evaluate_config(self, rnd: int) -> Mapping[str, Any]:
        """The instructions sent to every client that evaluates in round ``rnd`` (none)."""
        return Instructions.make(rnd, phase="evaluate")

    def client_config(self, rnd: int, node_id: str) -> dict[str, Any]:
        """Extra config for one client of round ``rnd``, merged over :meth:`fit_config`."""
        return {}

    def update_policy(self, rnd: int, sampled: Sequence[str]) -> UpdatePolicy:
        """How workers check (and, for DP, clip) each update of round ``rnd``."""
        per_client = {}
        for node_id in sampled:
            extra = self.client_config(rnd, node_id)
            if extra:
                per_client[node_id] = extra
        return UpdatePolicy(max_update_norm=self.max_update_norm, per_client=per_client)

    def aggregate(self, rnd: int, current: Parameters, total: WeightedSum) -> Parameters:
        """New global parameters from the example-weighted sum of the round's updates."""
        raise TypeError(f"{type(self).__name__} must override aggregate() or aggregate_updates()")

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        """New global parameters from individual updates (folds them by default)."""
        total = WeightedSum()
        for update in updates:
            total.add(update.parameters, float(update.num_examples))
        return self.aggregate(rnd, current, total)

    def aggregate_evaluate(
        self, rnd: int, reports: Sequence[EvaluateReport]
    ) -> tuple[float | None, dict[str, float]]:
        """Loss and metrics of a federated evaluation (example-weighted means by default)."""
        return weighted_evaluation(reports)

    def end_round(self, outcome: RoundOutcome) -> None:
        """Advance per-round state once round ``outcome.round`` is aggregated.

        The schema calls it exactly once per fit round, after :meth:`aggregate` /
        :meth:`aggregate_updates` and before :meth:`round_metrics` (DP wrappers account
        privacy and adapt their clipping norm here). Stateless strategies: nothing.
        """

    def state(self) -> dict[str, Any]:
        """The strategy's mutable state across rounds (momentum, moments, ...), for checkpoints.

        Values are numbers, strings, lists and dicts of them and numpy arrays;
        :meth:`load_state` restores it so that the run continues bit-identically.
        """
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned (stateless strategies: nothing)."""

    def round_metrics(self, rnd: int, stats: Mapping[str, float]) -> dict[str, float]:
        """Metrics the strategy adds to round ``rnd``'s record (e.g. DP ``epsilon``).

        ``stats`` are the counters the workers summed under the update policy. Read-only:
        called after :meth:`end_round`, it reports what that round did.
        """
        return {}
