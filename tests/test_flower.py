"""redfl's aggregation against Flower's own implementation on identical inputs (to 1e-6).

Flower (``flwr``) is a test-only dependency; these tests always run.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAdagrad as FlowerFedAdagrad
from flwr.server.strategy import FedAvgM as FlowerFedAvgM
from flwr.server.strategy import FedYogi as FlowerFedYogi
from flwr.server.strategy.aggregate import (
    aggregate,
    aggregate_bulyan,
    aggregate_krum,
    aggregate_median,
    aggregate_qffl,
    aggregate_trimmed_avg,
)
from flwr.supercore.differential_privacy import (
    compute_adaptive_noise_params,
    compute_clip_model_update,
    compute_stdv,
)

from redfl.algorithms import (
    Bulyan,
    ClientUpdate,
    FedAdagrad,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
)
from redfl.algorithms.updates import clip_update, update_norm
from redfl.core.arrays import WeightedSum
from redfl.privacy import DPAdaptiveClipping, DPFixedClipping

NAMES = ("w", "b")
SHAPES = ((5, 3), (3,))


def make_updates(seed: int, n: int, equal: bool = False) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    return [
        ClientUpdate(
            f"c{i}",
            {k: rng.normal(size=s) for k, s in zip(NAMES, SHAPES, strict=True)},
            10 if equal else int(rng.integers(1, 100)),
            {"loss": float(rng.uniform(0.2, 2.0))},
        )
        for i in range(n)
    ]


def as_flower(updates: list[ClientUpdate]) -> list[tuple[list[np.ndarray], int]]:
    return [([u.parameters[k].copy() for k in NAMES], u.num_examples) for u in updates]


def zeros() -> dict[str, np.ndarray]:
    return {k: np.zeros(s) for k, s in zip(NAMES, SHAPES, strict=True)}


def assert_same(ours: dict[str, np.ndarray], theirs: list[np.ndarray]) -> None:
    for name, array in zip(NAMES, theirs, strict=True):
        np.testing.assert_allclose(ours[name], array, rtol=0, atol=1e-6)


def fold(updates: list[ClientUpdate]) -> WeightedSum:
    total = WeightedSum()
    for u in updates:
        total.add(u.parameters, float(u.num_examples))
    return total


def test_fedavg_equals_flower_aggregate() -> None:
    updates = make_updates(0, 9)
    assert_same(FedAvg().aggregate(1, zeros(), fold(updates)), aggregate(as_flower(updates)))


def test_median_equals_flower() -> None:
    for n in (6, 7):
        updates = make_updates(n, n)
        ours = FedMedian().aggregate_updates(1, zeros(), updates)
        assert_same(ours, aggregate_median(as_flower(updates)))


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.2, 0.3])
def test_trimmed_mean_equals_flower(beta: float) -> None:
    updates = make_updates(2, 11)
    ours = FedTrimmedAvg(beta=beta).aggregate_updates(1, zeros(), updates)
    assert_same(ours, aggregate_trimmed_avg(as_flower(updates), beta))


@pytest.mark.parametrize("f", [0, 1, 3])
def test_krum_equals_flower(f: int) -> None:
    updates = make_updates(3 + f, 10)
    ours = Krum(f=f).aggregate_updates(1, zeros(), updates)
    assert_same(ours, aggregate_krum(as_flower(updates), num_malicious=f, to_keep=0))


def test_multikrum_equals_flower_with_equal_example_counts() -> None:
    # Flower weights the kept updates by examples; Blanchard et al. average them plainly.
    updates = make_updates(4, 10, equal=True)
    ours = MultiKrum(f=2, m=5).aggregate_updates(1, zeros(), updates)
    assert_same(ours, aggregate_krum(as_flower(updates), num_malicious=2, to_keep=5))


@pytest.mark.parametrize(("f", "n"), [(1, 7), (2, 12)])
def test_bulyan_equals_flower(f: int, n: int) -> None:
    updates = make_updates(5 + n, n)
    ours = Bulyan(f=f).aggregate_updates(1, zeros(), updates)
    theirs = aggregate_bulyan(
        as_flower(updates), num_malicious=f, aggregation_rule=aggregate_krum, to_keep=0
    )
    assert_same(ours, theirs)


def flower_rounds(strategy, rounds: list[list[ClientUpdate]]) -> list[np.ndarray]:
    current = None
    for rnd, updates in enumerate(rounds, 1):
        results = [
            (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(w), n, {}))
            for w, n in as_flower(updates)
        ]
        parameters, _ = strategy.aggregate_fit(rnd, results, [])
        current = parameters_to_ndarrays(parameters)
    assert current is not None
    return current


def redfl_rounds(strategy, start: dict[str, np.ndarray], rounds) -> dict[str, np.ndarray]:
    x = start
    for rnd, updates in enumerate(rounds, 1):
        x = strategy.aggregate(rnd, x, fold(updates))
    return x


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (
            lambda: FedAvgM(server_learning_rate=0.8, server_momentum=0.6),
            lambda p: FlowerFedAvgM(
                initial_parameters=p, server_learning_rate=0.8, server_momentum=0.6
            ),
        ),
        (
            lambda: FedYogi(eta=0.05, beta_1=0.8, beta_2=0.9, tau=1e-3),
            lambda p: FlowerFedYogi(
                initial_parameters=p, eta=0.05, beta_1=0.8, beta_2=0.9, tau=1e-3
            ),
        ),
        (
            lambda: FedAdagrad(eta=0.1, tau=1e-2),
            lambda p: FlowerFedAdagrad(initial_parameters=p, eta=0.1, tau=1e-2),
        ),
    ],
)
def test_server_optimizers_equal_flower_over_rounds(ours, theirs) -> None:
    start = {k: v + 0.5 for k, v in zeros().items()}
    rounds = [make_updates(20 + r, 6) for r in range(4)]
    flower = theirs(ndarrays_to_parameters([start[k] for k in NAMES]))
    assert_same(redfl_rounds(ours(), start, rounds), flower_rounds(flower, rounds))


def test_qfedavg_step_equals_flower_aggregate_qffl() -> None:
    q, lr = 0.7, 0.05
    start = {k: v + 0.3 for k, v in zeros().items()}
    updates = make_updates(30, 5)
    deltas, hs = [], []
    for u in updates:  # the per-client terms, as Flower's QFedAvg.aggregate_fit forms them
        loss = u.metrics["loss"]
        grads = [(start[k] - u.parameters[k]) / lr for k in NAMES]
        squared = sum(float(np.sum(g * g)) for g in grads)
        deltas.append([np.float_power(loss + 1e-10, q) * g for g in grads])
        hs.append(
            q * np.float_power(loss + 1e-10, q - 1) * squared
            + (1.0 / lr) * np.float_power(loss + 1e-10, q)
        )
    theirs = aggregate_qffl([start[k] for k in NAMES], deltas, hs)
    assert_same(QFedAvg(q=q, learning_rate=lr).aggregate_updates(1, start, updates), theirs)


def test_update_clipping_equals_flower() -> None:
    start = zeros()
    for seed, bound in ((40, 0.5), (41, 100.0)):
        update = make_updates(seed, 1)[0].parameters
        ours = clip_update(update, start, update_norm(update, start), bound)
        theirs = [update[k].copy() for k in NAMES]
        compute_clip_model_update(theirs, [start[k] for k in NAMES], bound)
        assert_same(ours, theirs)


def test_dp_noise_scale_equals_flower() -> None:
    fixed = DPFixedClipping(FedAvg(), clipping_norm=2.0, noise_multiplier=1.3)
    ours = fixed.update_noise_multiplier * fixed.clipping_norm / 8
    assert ours == pytest.approx(compute_stdv(1.3, 2.0, 8), abs=1e-12)
    adaptive = DPAdaptiveClipping(FedAvg(), noise_multiplier=1.1, clipped_count_stddev=3.0)
    count_stddev, theirs = compute_adaptive_noise_params(1.1, 60, 3.0)
    assert count_stddev == 3.0
    assert adaptive.update_noise_multiplier == pytest.approx(theirs, abs=1e-12)
