"""Attack simulation: the wrappers' math, the seeded choice, and robustness on digits."""

from __future__ import annotations

import numpy as np
import pytest
from building import star_from_config
from scipy.stats import norm

from redfl import Client, StarFederation
from redfl.algorithms import ClientUpdate, FedAvg, FedMedian, FedTrimmedAvg, Krum, Strategy
from redfl.attacks import (
    Attacked,
    GaussianNoise,
    LabelFlip,
    LittleIsEnough,
    SignFlip,
    alie_z,
    choose_attackers,
)
from redfl.examples.digits import DigitsClient, DigitsOptions, central_evaluation
from redfl.models import SoftmaxRegression
from redfl.run.build import attackers_from_config
from redfl.run.config import parse_config

IDS = [f"client-{i}" for i in range(50)]


def test_choose_attackers_is_seeded_and_sized() -> None:
    first = choose_attackers(IDS, 0.2, seed=3)
    assert len(first) == 10 and len(set(first)) == 10 and set(first) <= set(IDS)
    assert first == choose_attackers(IDS, 0.2, seed=3)
    assert first != choose_attackers(IDS, 0.2, seed=4)
    assert choose_attackers(IDS, 0.0, seed=3) == []
    with pytest.raises(ValueError, match="malicious_fraction must be in"):
        choose_attackers(IDS, 1.5, seed=0)


def test_sign_flip_reverses_and_scales_the_update() -> None:
    g = {"w": np.array([1.0, 2.0], np.float32)}
    honest = {"w": np.array([1.5, 1.0], np.float32)}
    got = SignFlip(10.0).corrupt(g, honest, np.random.default_rng(0))
    np.testing.assert_allclose(got["w"], [1.0 - 10 * 0.5, 2.0 + 10 * 1.0])
    assert got["w"].dtype == np.float32


def test_gaussian_noise_adds_noise_of_the_given_std() -> None:
    g = {"w": np.zeros(50_000)}
    honest = {"w": np.full(50_000, 2.0)}
    got = GaussianNoise(0.5).corrupt(g, honest, np.random.default_rng(1))["w"] - 2.0
    assert float(got.std()) == pytest.approx(0.5, rel=0.02)


class Const(Client):
    """Trains nothing: returns the global weights plus its index."""

    def fit(self, parameters, config):
        return {"w": parameters["w"] + np.float32(self.context.index)}, 1, {}


def test_only_the_chosen_clients_misbehave() -> None:
    ids = [f"client-{i}" for i in range(6)]
    bad = frozenset(["client-1", "client-4"])

    class Report(Strategy):
        weighted_sum = False

        def aggregate_updates(self, rnd, current, updates):
            self.seen = {u.node_id: float(u.parameters["w"][0]) for u in updates}
            return current

    strategy = Report()
    federation = StarFederation(
        Attacked(Const, SignFlip(2.0), bad),
        6,
        initial_parameters={"w": np.zeros(1, np.float32)},
        strategy=strategy,
        client_ids=ids,
        runtime="local",
    )
    federation.train(1)
    expected = {f"client-{i}": (-2.0 * i if f"client-{i}" in bad else float(i)) for i in range(6)}
    assert strategy.seen == expected


def test_label_flip_trains_on_flipped_labels() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 64)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    model = SoftmaxRegression(epochs=2, batch_size=8)
    start = model.init_parameters()
    flipped, _ = model.fit_prepared(
        start, model.prepare(x, y), np.random.default_rng(5), label_flip=True
    )
    reference, _ = model.fit(start, x, 9 - y, np.random.default_rng(5))
    for k in start:
        np.testing.assert_allclose(flipped[k], reference[k], atol=1e-6)
    assert LabelFlip(10).config() == {"label_flip": 10}


def test_alie_sends_mean_minus_z_std_of_the_attackers_honest_updates() -> None:
    rng = np.random.default_rng(3)
    n, bad = 12, ["c0", "c3", "c7"]
    updates = [ClientUpdate(f"c{i}", {"w": rng.normal(size=5)}, 1, {}) for i in range(n)]
    honest_bad = np.stack([u.parameters["w"] for u in updates if u.node_id in bad])
    s = np.floor(n / 2 + 1) - len(bad)
    z = norm.ppf((n - s) / n)  # Baruch et al., z_max
    assert alie_z(n, len(bad)) == pytest.approx(z)
    forged = honest_bad.mean(axis=0) - z * honest_bad.std(axis=0)
    got = LittleIsEnough(FedMedian(), bad).aggregate_updates(1, {"w": np.zeros(5)}, updates)
    values = [forged if u.node_id in bad else u.parameters["w"] for u in updates]
    np.testing.assert_allclose(got["w"], np.median(np.stack(values), axis=0), atol=1e-12)
    assert LittleIsEnough(FedAvg(), bad).weighted_sum is False


# -- robustness on digits -------------------------------------------------------------------

OPTIONS = DigitsOptions(partition="iid", test_fraction=0.2, tile=4)


def attacked_accuracy(strategy: Strategy, rounds: int = 20) -> float:
    bad = frozenset(choose_attackers(IDS, 0.2, seed=0))
    federation = StarFederation(
        Attacked(DigitsClient, SignFlip(10.0), bad),
        50,
        initial_parameters=DigitsClient.initial_parameters(OPTIONS),
        strategy=strategy,
        options=OPTIONS.model_dump(),
        evaluate_fn=central_evaluation(OPTIONS),
        runtime="local",
        seed=0,
    )
    accuracy = federation.train(rounds).history[-1].accuracy
    assert accuracy is not None
    return accuracy


def test_sign_flip_breaks_fedavg() -> None:
    assert attacked_accuracy(FedAvg()) < 0.5


@pytest.mark.parametrize(
    "strategy", [Krum(f=10), FedMedian(), FedTrimmedAvg(beta=0.2)], ids=lambda s: type(s).__name__
)
def test_robust_strategies_resist_sign_flip(strategy: Strategy) -> None:
    assert attacked_accuracy(strategy) >= 0.85


def test_attack_table_builds_the_same_attackers_and_wrapper() -> None:
    config = parse_config(
        {
            "federation": {"runtime": "local", "seed": 0},
            "client": {"target": "redfl.examples.digits:DigitsClient", "num_clients": 50},
            "strategy": {"name": "krum", "f": 10},
            "attack": {"kind": "sign_flip", "malicious_fraction": 0.2, "scale": 10.0},
        }
    )
    assert attackers_from_config(config) == choose_attackers(IDS, 0.2, seed=0)
    federation = star_from_config(config)
    template = federation.nodes[0].template
    assert isinstance(template, Attacked) and template.attack == SignFlip(10.0)
    assert isinstance(federation.strategy, Krum) and federation.strategy.f == 10


def test_each_attacker_draws_its_own_noise() -> None:
    ids = [f"client-{i}" for i in range(4)]

    class Report(Strategy):
        weighted_sum = False

        def aggregate_updates(self, rnd, current, updates):
            self.seen = {u.node_id: u.parameters["w"].copy() for u in updates}
            return current

    strategy = Report()
    federation = StarFederation(
        Attacked(Const, GaussianNoise(1.0), frozenset(ids[1:3])),
        4,
        initial_parameters={"w": np.zeros(8, np.float32)},
        strategy=strategy,
        client_ids=ids,
        runtime="local",
    )
    federation.train(1)
    noise_1 = strategy.seen["client-1"] - 1.0
    noise_2 = strategy.seen["client-2"] - 2.0
    assert not np.allclose(noise_1, noise_2)
    np.testing.assert_array_equal(strategy.seen["client-3"], np.full(8, 3.0, np.float32))
