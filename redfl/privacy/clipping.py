"""Central differential privacy for a strategy: clipping, Gaussian noise, accounting.

- Fixed clipping (DP-FedAvg): McMahan et al., "Learning Differentially Private Recurrent
  Language Models", ICLR 2018. Every update's distance to the global model is clipped to
  ``clipping_norm`` (on the server, or on the clients = their workers, before the
  worker's partial sum), updates count equally, and the server adds Gaussian noise of
  std ``noise_multiplier * clipping_norm / m`` (m updates) to the aggregate.
- Adaptive clipping: Andrew et al., "Differentially Private Learning with Adaptive
  Clipping", NeurIPS 2021. The norm follows the ``target_quantile`` of update norms:
  ``C <- C * exp(-clip_lr * (b - target_quantile))`` with ``b`` the noisy fraction of
  unclipped updates (count noise std ``clipped_count_stddev``); the update noise
  multiplier becomes ``(z^-2 - (2 clipped_count_stddev)^-2)^-1/2``.

At the end of each round (:meth:`~redfl.algorithms.Strategy.end_round`, the one hook
where this state changes) the :class:`~redfl.privacy.RdpAccountant` adds the round and
gives ``epsilon`` for ``delta``, and adaptive clipping moves its norm; the round's
metrics report both. The sampling rate accounted is the round's
sample size over the clients available. The analysis of Mironov et al. assumes Poisson
sampling, while redfl samples a fixed number without replacement: the epsilon reported
is the usual approximation made by DP-FedAvg implementations, not a proof for that
sampling.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
from pydantic import Field

from redfl.algorithms.strategy import ClientUpdate, RoundOutcome, Strategy, require
from redfl.algorithms.updates import UpdatePolicy, clip_update, update_norm
from redfl.algorithms.wrapper import StrategyWrapper
from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.config import Strict
from redfl.privacy.accountant import RdpAccountant

Side = Literal["server", "client"]


class DPFixedClipping(StrategyWrapper):
    """Clip every update to ``clipping_norm``, add Gaussian noise, account epsilon.

    Parameters
    ----------
    inner:
        The strategy that aggregates the clipped updates.
    clipping_norm:
        C, > 0.
    noise_multiplier:
        z >= 0 (noise std over C); with 0 no noise is added and no epsilon reported.
    side:
        ``"server"`` clips on the driver (every update travels); ``"client"`` clips on
        the workers, which then still pre-aggregate weighted-sum strategies.
    delta:
        The delta of the reported (epsilon, delta), in (0, 1).
    seed:
        Seed of the server's noise (a function of seed and round).
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        clipping_norm: float = 1.0,
        noise_multiplier: float = 1.0,
        side: Side = "server",
        delta: float = 1e-5,
        seed: int = 0,
    ) -> None:
        super().__init__(inner)
        require(0 < clipping_norm < math.inf, "clipping_norm", f"must be > 0, got {clipping_norm}")
        require(
            0 <= noise_multiplier < math.inf,
            "noise_multiplier",
            f"must be >= 0, got {noise_multiplier}",
        )
        require(side in ("server", "client"), "side", f"must be 'server' or 'client', got {side!r}")
        require(0 < delta < 1, "delta", f"must be in (0, 1), got {delta}")
        self.clipping_norm = clipping_norm
        self.noise_multiplier = noise_multiplier
        self.update_noise_multiplier = noise_multiplier
        self.side = side
        self.delta = delta
        self.seed = seed
        self.accountant = RdpAccountant()
        self.weighted_sum = inner.weighted_sum and side == "client"
        self._pending: tuple[int, int, float | None] | None = None
        """(round, updates aggregated, unclipped among them when clipped here)."""
        self._report: tuple[int, dict[str, float]] = (0, {})
        """The last ended round and what it measured (its metrics)."""

    def clipping_on_workers(self) -> DPFixedClipping:
        """This wrapper clipping on the workers (``side="client"``), the same math: a
        copy sharing the inner strategy and the accountant (``self`` if it clips there
        already). A hierarchy needs it: its root never sees a single update, so the LCPs,
        which do, clip for a server-side wrapper."""
        if self.side == "client":
            return self
        moved = copy.copy(self)
        moved.side = "client"
        moved.weighted_sum = self.inner.weighted_sum
        return moved

    def update_policy(self, rnd: int, sampled: Sequence[str]) -> UpdatePolicy:
        """Client side: workers clip to C and fold with equal weights."""
        policy = self.inner.update_policy(rnd, sampled)
        if self.side == "server":
            return policy
        return replace(policy, clip_norm=self.clipping_norm, equal_weights=True)

    def aggregate(self, rnd: int, current: Parameters, total: WeightedSum) -> Parameters:
        """Client side, pre-aggregated: the inner aggregate of clipped updates, plus noise."""
        self._begin(rnd, total.count, None)
        return self._noisy(rnd, self.inner.aggregate(rnd, current, total), total.count)

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        """Clip (server side), weight equally, aggregate with the inner strategy, add noise."""
        equal = []
        unclipped = 0.0
        for update in updates:
            parameters = update.parameters
            if self.side == "server":
                norm = update_norm(parameters, current)
                unclipped += norm <= self.clipping_norm
                parameters = clip_update(parameters, current, norm, self.clipping_norm)
            equal.append(ClientUpdate(update.node_id, parameters, 1, update.metrics))
        self._begin(rnd, len(updates), unclipped if self.side == "server" else None)
        return self._noisy(rnd, self.inner.aggregate_updates(rnd, current, equal), len(updates))

    def _begin(self, rnd: int, count: int, unclipped: float | None) -> None:
        if self._pending is not None and self._pending[0] != rnd:
            raise RuntimeError(
                f"{type(self).__name__}: end_round() was not called after round "
                f"{self._pending[0]}; the schema must call strategy.end_round once per round"
            )
        self._pending = (rnd, count, unclipped)

    def _noisy(self, rnd: int, aggregate: Parameters, count: int) -> Parameters:
        if self.noise_multiplier == 0:
            return aggregate
        std = self.update_noise_multiplier * self.clipping_norm / max(1, count)
        rng = np.random.default_rng([self.seed, rnd, 0xD9])
        return {
            k: (v + rng.normal(0.0, std, size=v.shape)).astype(v.dtype)
            for k, v in aggregate.items()
        }

    def end_round(self, outcome: RoundOutcome) -> None:
        """Account the round (sampling rate ``sampled / available``) and, adaptive, move C."""
        self.inner.end_round(outcome)
        pending = self._pending or (outcome.round, outcome.succeeded, None)
        _, count, unclipped = pending
        if unclipped is None:
            unclipped = float(outcome.stats.get("unclipped", 0.0))
        report = {"clipping_norm": self.clipping_norm}
        if self.noise_multiplier > 0:
            rate = outcome.sampled / max(1, outcome.available)
            self.accountant.step(self.noise_multiplier, rate)
            report["epsilon"] = self.accountant.epsilon(self.delta)
        self._adapt(outcome.round, unclipped, count, report)
        self._pending = None
        self._report = (outcome.round, report)

    def _adapt(self, rnd: int, unclipped: float, count: int, report: dict[str, float]) -> None:
        """Adaptive clipping's step (fixed clipping: none)."""

    def state(self) -> dict[str, Any]:
        """The inner state, the clipping norm and the accountant's RDP so far."""
        return {
            **super().state(),
            "clipping_norm": self.clipping_norm,
            "rdp": self.accountant.rdp.copy(),
            "steps": self.accountant.steps,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore the inner state, the clipping norm and the accountant."""
        super().load_state(state)
        self.clipping_norm = float(state["clipping_norm"])
        self.accountant.rdp = np.array(state["rdp"], np.float64)
        self.accountant.steps = int(state["steps"])

    def round_metrics(self, rnd: int, stats: Mapping[str, float]) -> dict[str, float]:
        """The inner metrics plus what :meth:`end_round` measured: ``clipping_norm`` (the
        round's), ``epsilon`` (with noise; so far) and, adaptive, ``unclipped_fraction``.

        Raises
        ------
        RuntimeError
            If round ``rnd`` has not ended (:meth:`end_round` not called for it).
        """
        ended, report = self._report
        if ended != rnd:
            raise RuntimeError(
                f"{type(self).__name__}: round_metrics({rnd}) before end_round({rnd}); the "
                "schema must call strategy.end_round once per round, before round_metrics"
            )
        return {**self.inner.round_metrics(rnd, stats), **report}


class DPAdaptiveClipping(DPFixedClipping):
    """:class:`DPFixedClipping` whose norm tracks a quantile of the update norms.

    Parameters
    ----------
    inner, noise_multiplier, side, delta, seed:
        As for :class:`DPFixedClipping` (``noise_multiplier`` is the total z).
    initial_clipping_norm:
        C at round 1, > 0.
    target_quantile:
        gamma in (0, 1): the fraction of updates meant to stay unclipped.
    clip_lr:
        eta_C > 0, the geometric step of the norm.
    clipped_count_stddev:
        sigma_b >= 0, noise on the count of unclipped updates; with noise it must exceed
        ``noise_multiplier / 2``.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        initial_clipping_norm: float = 0.1,
        noise_multiplier: float = 1.0,
        target_quantile: float = 0.5,
        clip_lr: float = 0.2,
        clipped_count_stddev: float = 2.0,
        side: Side = "server",
        delta: float = 1e-5,
        seed: int = 0,
    ) -> None:
        super().__init__(
            inner,
            clipping_norm=initial_clipping_norm,
            noise_multiplier=noise_multiplier,
            side=side,
            delta=delta,
            seed=seed,
        )
        require(
            0 < target_quantile < 1,
            "target_quantile",
            f"must be in (0, 1), got {target_quantile}",
        )
        require(0 < clip_lr < math.inf, "clip_lr", f"must be > 0, got {clip_lr}")
        require(
            clipped_count_stddev >= 0,
            "clipped_count_stddev",
            f"must be >= 0, got {clipped_count_stddev}",
        )
        if noise_multiplier > 0:
            require(
                2 * clipped_count_stddev > noise_multiplier,
                "clipped_count_stddev",
                f"must exceed noise_multiplier / 2 = {noise_multiplier / 2}, "
                f"got {clipped_count_stddev}",
            )
            self.update_noise_multiplier = (
                noise_multiplier**-2 - (2 * clipped_count_stddev) ** -2
            ) ** -0.5
        self.target_quantile = target_quantile
        self.clip_lr = clip_lr
        self.clipped_count_stddev = clipped_count_stddev

    def _adapt(self, rnd: int, unclipped: float, count: int, report: dict[str, float]) -> None:
        """Move C toward the target quantile for the next round (noisy unclipped count)."""
        rng = np.random.default_rng([self.seed, rnd, 0xC1])
        noise = rng.normal(0.0, self.clipped_count_stddev) if self.clipped_count_stddev else 0.0
        fraction = (unclipped + noise) / max(1, count)
        report["unclipped_fraction"] = unclipped / max(1, count)
        self.clipping_norm *= math.exp(-self.clip_lr * (fraction - self.target_quantile))


class PrivacyConfig(Strict):
    """The ``[privacy]`` table: central differential privacy (``mode = "fixed"`` or
    ``"adaptive"`` clipping) wrapped around the strategy, see :func:`private`."""

    mode: Literal["none", "fixed", "adaptive"] = "none"
    side: Side = "server"
    clipping_norm: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    noise_multiplier: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    target_quantile: float = Field(default=0.5, gt=0.0, lt=1.0)
    clip_lr: float = Field(default=0.2, gt=0.0, allow_inf_nan=False)
    clipped_count_stddev: float = Field(default=2.0, ge=0.0, allow_inf_nan=False)


def private(strategy: Strategy, table: PrivacyConfig, seed: int) -> Strategy:
    """``strategy`` wrapped as ``[privacy]`` says (unchanged for ``mode = "none"``).

    Raises
    ------
    ParameterError
        Naming the bad parameter.
    """
    if table.mode == "none":
        return strategy
    shared: dict[str, Any] = {
        "noise_multiplier": table.noise_multiplier,
        "side": table.side,
        "delta": table.delta,
        "seed": seed,
    }
    if table.mode == "fixed":
        return DPFixedClipping(strategy, clipping_norm=table.clipping_norm, **shared)
    adaptive = ("target_quantile", "clip_lr", "clipped_count_stddev")
    shared.update({name: getattr(table, name) for name in adaptive})
    return DPAdaptiveClipping(strategy, initial_clipping_norm=table.clipping_norm, **shared)
