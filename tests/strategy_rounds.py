"""Strategy rounds without a federation: seeded updates, the schema's order of hooks.

``STRATEGY_MAKERS`` builds every registered strategy and every wrapper (DP fixed and
adaptive on both sides, ALIE) over a few of them, for tests that must cover them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from redfl.algorithms import ClientUpdate, RoundOutcome, Strategy
from redfl.algorithms.registry import STRATEGIES, make_strategy
from redfl.attacks import LittleIsEnough
from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.seeding import round_rng
from redfl.privacy import DPAdaptiveClipping, DPFixedClipping

IDS = [f"client-{i}" for i in range(10)]
SEED = 5


def initial() -> Parameters:
    return {"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "b": np.zeros(4)}


def client_update(rnd: int, index: int, x: Parameters) -> ClientUpdate:
    """A deterministic update of client ``index`` in round ``rnd``."""
    rng = np.random.default_rng([SEED, rnd, index])
    new = {
        k: (v + rng.normal(0.0, 0.3 + 0.1 * index, v.shape)).astype(v.dtype) for k, v in x.items()
    }
    loss = 1.0 + 0.1 * index + rng.random()
    return ClientUpdate(IDS[index], new, 10 + index, {"loss": loss})


def play_round(strategy: Strategy, rnd: int, x: Parameters) -> tuple[Parameters, dict[str, float]]:
    """One round in the schema's order: sample, config, policy, aggregate, end, metrics."""
    sampled = strategy.configure_fit(rnd, IDS, round_rng(SEED, rnd))
    strategy.fit_config(rnd)
    policy = strategy.update_policy(rnd, sampled)
    updates, stats, total = [], {"unclipped": 0.0}, WeightedSum()
    for node_id in sampled:
        update = client_update(rnd, IDS.index(node_id), x)
        new, weight, counters, reason = policy.apply(
            dict(update.parameters), x, update.num_examples
        )
        assert reason is None
        for key, value in counters.items():
            stats[key] += value
        updates.append(ClientUpdate(node_id, new, update.num_examples, update.metrics))
        total.add(new, weight)
    if strategy.weighted_sum:
        x = strategy.aggregate(rnd, x, total)
    else:
        x = strategy.aggregate_updates(rnd, x, updates)
    strategy.end_round(RoundOutcome(rnd, len(IDS), len(sampled), len(sampled), stats))
    return x, strategy.round_metrics(rnd, stats)


def _registered(name: str) -> Callable[[], Strategy]:
    return lambda: make_strategy(name)


STRATEGY_MAKERS: dict[str, Callable[[], Strategy]] = {
    **{name: _registered(name) for name in STRATEGIES},
    "fedadam-eta_l": lambda: make_strategy("fedadam", eta_l=0.05),
    "dp-fixed-server": lambda: DPFixedClipping(
        make_strategy("fedavgm", fraction_fit=0.5), clipping_norm=0.8, seed=SEED
    ),
    "dp-fixed-client": lambda: DPFixedClipping(
        make_strategy("fedadam", fraction_fit=0.5), clipping_norm=0.8, side="client", seed=SEED
    ),
    "dp-adaptive-server": lambda: DPAdaptiveClipping(
        make_strategy("fedyogi"), initial_clipping_norm=0.5, noise_multiplier=0.5, seed=SEED
    ),
    "dp-adaptive-client": lambda: DPAdaptiveClipping(
        make_strategy("fedavg", fraction_fit=0.7),
        initial_clipping_norm=0.5,
        noise_multiplier=0.5,
        side="client",
        seed=SEED,
    ),
    "alie-dp": lambda: LittleIsEnough(
        DPAdaptiveClipping(make_strategy("fedmedian"), noise_multiplier=0.3, seed=SEED),
        IDS[:3],
    ),
}
"""Every registered strategy and the wrappers, by a test id."""


def fingerprint(strategy: Any) -> bytes:
    """Everything the strategy holds, as bytes (arrays by value)."""
    import pickle

    return pickle.dumps(vars(strategy), protocol=5)
