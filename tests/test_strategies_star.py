"""Strategy hooks in a star federation: per-client config, rejected updates, evaluation
aggregation, callbacks, checkpoints, FedProx in the model; local and real Ray."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from redfl import Callback, Client, FederationError, StarFederation
from redfl.algorithms import FedAvg, FedMedian, FedProx, Strategy
from redfl.examples.digits import DigitsClient, DigitsOptions
from redfl.models import SoftmaxRegression

ZERO = {"w": np.zeros(3, np.float32)}


class Faulty(Client):
    """Client 0 NaN, 1 wrong shape, 2 float64, 3 a huge step; the others step by 1."""

    def fit(self, parameters, config):
        w = parameters["w"]
        index = self.context.index
        bonus = float(config.get("bonus", 0.0))
        if index == 0:
            return {"w": w + np.float32("nan")}, 1, {}
        if index == 1:
            return {"w": np.zeros(4, np.float32)}, 1, {}
        if index == 2:
            return {"w": w.astype(np.float64) + 1}, 1, {}
        if index == 3:
            return {"w": w + np.float32(100)}, 1, {}
        return {"w": w + np.float32(1 + bonus)}, 1, {"bonus_seen": bonus}

    def evaluate(self, parameters, config):
        return float(self.context.index), 2, {"index": float(self.context.index)}


class Bonus(FedAvg):
    """Gives client-i the bonus i / 10 through its own config."""

    def client_config(self, rnd: int, node_id: str) -> dict[str, Any]:
        return {"bonus": int(node_id.split("-")[1]) / 10}


def test_bad_updates_are_rejected_per_client_with_reasons() -> None:
    federation = StarFederation(
        Faulty,
        8,
        initial_parameters=ZERO,
        strategy=FedAvg(max_update_norm=10.0),
        runtime="local",
    )
    result = federation.train(2)
    reasons = {(f.node_id, f.round): f.reason for f in result.failures}
    for rnd in (1, 2):
        assert "NaN or infinity" in reasons[("client-0", rnd)]
        assert "shape (4,), expected (3,)" in reasons[("client-1", rnd)]
        assert "dtype float64, expected float32" in reasons[("client-2", rnd)]
        assert "exceeds max_update_norm 10" in reasons[("client-3", rnd)]
    assert len(result.failures) == 8
    assert [r.succeeded for r in result.history] == [4, 4]
    assert result.parameters is not None
    np.testing.assert_array_equal(result.parameters["w"], np.full(3, 2.0, np.float32))


def test_a_round_with_too_few_good_updates_stops_with_the_reasons() -> None:
    federation = StarFederation(
        Faulty, 6, initial_parameters=ZERO, strategy=FedAvg(min_fit_clients=4), runtime="local"
    )
    with pytest.raises(FederationError, match=r"3 of 6 clients succeeded.*client-0: .*NaN"):
        federation.train(1)


def test_per_client_config_reaches_each_client() -> None:
    federation = StarFederation(
        Faulty, 8, initial_parameters=ZERO, strategy=Bonus(max_update_norm=10.0), runtime="local"
    )
    result = federation.train(1)
    bonuses = [i / 10 for i in range(4, 8)]  # the four good clients
    expected = sum(1 + b for b in bonuses) / 4
    assert result.parameters is not None
    np.testing.assert_allclose(result.parameters["w"], np.full(3, expected), rtol=1e-6)
    assert result.history[0].metrics["fit_bonus_seen"] == pytest.approx(sum(bonuses) / 4)


class WorstLoss(FedAvg):
    """Aggregates evaluation by its worst client."""

    def aggregate_evaluate(self, rnd, reports):
        worst = max(reports, key=lambda report: report[1])
        return worst[1], {"worst_index": worst[3]["index"], "count": float(len(reports))}


def test_aggregate_evaluate_hook_decides_the_round_loss() -> None:
    federation = StarFederation(
        Faulty,
        6,
        initial_parameters=ZERO,
        strategy=WorstLoss(fraction_evaluate=1.0),
        runtime="local",
    )
    record = federation.train(1).history[0]
    assert record.loss == 5.0
    assert record.metrics["federated_worst_index"] == 5.0
    assert record.metrics["federated_count"] == 6.0


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple[str, int, Any]] = []

    def on_aggregate(self, rnd: int, parameters: Mapping[str, np.ndarray]) -> None:
        self.events.append(("aggregate", rnd, float(parameters["w"][0])))

    def on_metrics(self, rnd: int, metrics: Mapping[str, float]) -> None:
        self.events.append(("metrics", rnd, sorted(metrics)))


class Step(Client):
    def fit(self, parameters, config):
        return {"w": parameters["w"] + np.float32(0.5)}, 1, {"loss": 1.0}


def test_callbacks_see_parameters_and_metrics() -> None:
    recorder = Recorder()
    federation = StarFederation(
        Step, 3, initial_parameters=ZERO, callbacks=[recorder], runtime="local"
    )
    federation.train(4)
    expected = []
    for rnd in range(1, 5):
        expected += [("aggregate", rnd, 0.5 * rnd), ("metrics", rnd, ["fit_loss"])]
    assert recorder.events == expected


def test_krum_with_too_few_clients_fails_at_construction_naming_f() -> None:
    from redfl.algorithms import Krum

    with pytest.raises(ValueError, match=r"f: Krum needs 2f \+ 3 = 9 clients .* a round has 8"):
        StarFederation(Step, 8, initial_parameters=ZERO, strategy=Krum(f=3), runtime="local")


# -- FedProx in the numpy model ------------------------------------------------------------


def prox_gradient_descent(
    x: np.ndarray, y: np.ndarray, theta0: np.ndarray, lr: float, mu: float, epochs: int
) -> np.ndarray:
    """Full-batch GD on mean cross-entropy + mu / 2 ||theta - theta0||^2 (bias row last)."""
    xa = np.hstack([x, np.ones((len(x), 1))])
    onehot = np.eye(10)[y]
    theta = theta0.copy()
    for _ in range(epochs):
        logits = xa @ theta
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        theta = theta - lr * (xa.T @ (p - onehot) / len(x) + mu * (theta - theta0))
    return theta


@pytest.mark.parametrize("mu", [0.0, 0.5, 5.0])
def test_softmax_honours_proximal_mu(mu: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(20, 64)).astype(np.float32)
    y = rng.integers(0, 10, 20)
    model = SoftmaxRegression(lr=0.1, epochs=4, batch_size=64)  # one batch: plain GD
    start = {
        "weight": rng.normal(size=(64, 10)).astype(np.float32),
        "bias": np.zeros(10, np.float32),
    }
    got, _ = model.fit(start, x, y, np.random.default_rng(1), proximal_mu=mu)
    theta0 = np.vstack([start["weight"], start["bias"][None, :]]).astype(np.float64)
    expected = prox_gradient_descent(x.astype(np.float64), y, theta0, 0.1, mu, 4)
    np.testing.assert_allclose(got["weight"], expected[:64], atol=2e-5)
    np.testing.assert_allclose(got["bias"], expected[64], atol=2e-5)


def test_fedprox_mu_reaches_the_digits_clients() -> None:
    options = DigitsOptions(partition="iid", test_fraction=0.2)
    drift = []
    for strategy in (FedProx(proximal_mu=0.0), FedProx(proximal_mu=10.0)):
        federation = StarFederation(
            DigitsClient,
            5,
            initial_parameters=DigitsClient.initial_parameters(options),
            strategy=strategy,
            options=options.model_dump(),
            runtime="local",
        )
        parameters = federation.train(1).parameters
        assert parameters is not None
        drift.append(float(np.linalg.norm(parameters["weight"])))
    assert drift[1] < 0.8 * drift[0]  # the proximal pull keeps the model near the start


# -- on real Ray ------------------------------------------------------------------------------


class Median(FedMedian):
    """Median with a per-client bonus and a norm bound."""

    def client_config(self, rnd: int, node_id: str) -> dict[str, Any]:
        return {"bonus": int(node_id.split("-")[1]) / 10}


def run(runtime: str, strategy: Strategy) -> tuple[np.ndarray, Sequence[tuple[str, int, str]]]:
    federation = StarFederation(
        Faulty,
        9,
        initial_parameters=ZERO,
        strategy=strategy,
        runtime=runtime,
        seed=1,
    )
    with federation:
        result = federation.train(2)
    failures = sorted((f.node_id, f.round, f.reason) for f in result.failures)
    assert result.parameters is not None
    return result.parameters["w"], failures


def test_ray_rejects_per_client_and_aggregates_individual_updates_like_local(
    ray_session: Any,
) -> None:
    on_ray = run("ray", Median(max_update_norm=10.0))
    local = run("local", Median(max_update_norm=10.0))
    np.testing.assert_array_equal(on_ray[0], local[0])
    assert on_ray[1] == local[1]
    assert len(on_ray[1]) == 8  # clients 0-3 in both rounds
    step = float(np.median([1 + i / 10 for i in range(4, 9)]))
    np.testing.assert_allclose(on_ray[0], np.full(3, 2 * step), rtol=1e-6)


def test_ray_client_side_dp_clips_on_workers_and_folds_like_local(ray_session: Any) -> None:
    from redfl.privacy import DPFixedClipping

    def strategy() -> Strategy:
        return DPFixedClipping(
            Bonus(max_update_norm=10.0), clipping_norm=1.2, noise_multiplier=0.5, side="client"
        )

    assert strategy().weighted_sum  # workers still return one partial sum each
    on_ray, local = run("ray", strategy()), run("local", strategy())
    np.testing.assert_array_equal(on_ray[0], local[0])
    assert on_ray[1] == local[1]


def test_client_side_dp_clips_every_update_to_the_norm() -> None:
    from redfl.privacy import DPFixedClipping

    strategy = DPFixedClipping(
        Bonus(max_update_norm=10.0), clipping_norm=1.2, noise_multiplier=0.0, side="client"
    )
    parameters, _ = run("local", strategy)
    # Clients 4..8 step by 1 + i / 10 on 3 coordinates: norms sqrt(3) (1.4 ... 1.8) > 1.2,
    # so each update is clipped to norm 1.2, i.e. 1.2 / sqrt(3) per coordinate, per round.
    np.testing.assert_allclose(parameters, np.full(3, 2 * 1.2 / np.sqrt(3)), rtol=1e-5)
