"""Partial sums on workers give the same model as aggregating every update on the driver."""

from __future__ import annotations

import numpy as np
from scale_nodes import SIZE, Drift, drift_update

from redfl import FedAvg, ResourcesConfig, StarFederation

TWO_WORKERS = ResourcesConfig(num_workers=2, worker={"CPU": 0.5})
CLIENTS, ROUNDS, SEED = 23, 3, 5


class Unfolded(FedAvg):
    """FedAvg that receives every update individually (no partial sums on workers)."""

    weighted_sum = False


def expected_parameters() -> np.ndarray:
    """All clients every round, example-weighted mean, computed here without redfl."""
    w = np.zeros(SIZE, np.float32)
    for rnd in range(1, ROUNDS + 1):
        updates = [drift_update(SEED, rnd, i, w) for i in range(CLIENTS)]
        total = np.sum([n * u.astype(np.float64) for u, n in updates], axis=0)
        w = (total / sum(n for _, n in updates)).astype(np.float32)
    return w


def run(strategy: FedAvg) -> np.ndarray:
    fed = StarFederation(
        Drift,
        CLIENTS,
        initial_parameters={"w": np.zeros(SIZE, np.float32)},
        strategy=strategy,
        resources=TWO_WORKERS,
        seed=SEED,
    )
    with fed:
        params = fed.train(ROUNDS).parameters
    assert params is not None
    return params["w"]


def test_partial_sums_equal_individual_aggregation_within_1e6(ray_session):
    folded = run(FedAvg())
    unfolded = run(Unfolded())
    expected = expected_parameters()
    assert np.abs(folded).max() > 0.1  # the updates are not trivial
    np.testing.assert_allclose(folded, unfolded, rtol=0, atol=1e-6)
    np.testing.assert_allclose(folded, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(unfolded, expected, rtol=0, atol=1e-6)
