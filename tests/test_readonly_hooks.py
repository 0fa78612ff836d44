"""Hooks that look read-only change nothing: every registered strategy and every wrapper."""

from __future__ import annotations

import pytest
from strategy_rounds import (
    IDS,
    SEED,
    STRATEGY_MAKERS,
    client_update,
    fingerprint,
    initial,
    play_round,
)

from redfl.algorithms import FedAvg, RoundOutcome
from redfl.core.seeding import round_rng
from redfl.privacy import DPAdaptiveClipping, DPFixedClipping


@pytest.mark.parametrize("name", sorted(STRATEGY_MAKERS))
def test_read_only_hooks_called_twice_change_nothing(name: str) -> None:
    strategy = STRATEGY_MAKERS[name]()
    x = initial()
    for rnd in (1, 2):  # some state first: momentum, moments, accountant, clipping norm
        x, metrics = play_round(strategy, rnd, x)
    before = fingerprint(strategy)
    results = []
    for _ in range(2):
        sampled = strategy.configure_fit(3, IDS, round_rng(SEED, 3))
        results.append(
            (
                sampled,
                dict(strategy.fit_config(3)),
                dict(strategy.evaluate_config(3)),
                strategy.update_policy(3, sampled),
                strategy.client_config(3, IDS[0]),
                strategy.configure_evaluate(3, IDS, round_rng(SEED, 3, 1)),
                strategy.round_metrics(2, {"unclipped": 1.0}),
                strategy.state().keys(),
            )
        )
        assert fingerprint(strategy) == before
    assert results[0] == results[1]
    assert results[0][6] == metrics  # round 2's metrics, however often asked


def test_dp_state_moves_only_at_the_end_of_the_round() -> None:
    strategy = DPAdaptiveClipping(
        FedAvg(fraction_fit=0.7), initial_clipping_norm=0.5, side="client", seed=SEED
    )
    play_round(strategy, 1, initial())
    norm = strategy.clipping_norm
    assert strategy.accountant.steps == 1 and norm != 0.5
    sampled = strategy.configure_fit(2, IDS, round_rng(SEED, 2))
    strategy.update_policy(2, sampled)
    strategy.round_metrics(1, {"unclipped": 3.0})
    assert (strategy.clipping_norm, strategy.accountant.steps) == (norm, 1)
    strategy.end_round(RoundOutcome(2, 10, len(sampled), len(sampled), {"unclipped": 3.0}))
    assert strategy.accountant.steps == 2
    assert strategy.clipping_norm != norm


def test_a_schema_that_skips_end_round_fails_loudly() -> None:
    strategy = DPFixedClipping(FedAvg(), seed=SEED)
    x = initial()
    sampled = strategy.configure_fit(1, IDS, round_rng(SEED, 1))
    updates = [client_update(1, IDS.index(i), x) for i in sampled]
    strategy.aggregate_updates(1, x, updates)
    with pytest.raises(RuntimeError, match=r"round_metrics\(1\) before end_round\(1\)"):
        strategy.round_metrics(1, {})
    with pytest.raises(RuntimeError, match=r"end_round\(\) was not called after round 1"):
        strategy.aggregate_updates(2, x, updates)
