"""Differential privacy: the RDP accountant, clipping, noise and epsilon in the history."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from typer.testing import CliRunner

from redfl import Client, StarFederation
from redfl.algorithms import ClientUpdate, FedAvg, FedMedian, ParameterError, RoundOutcome
from redfl.cli import app
from redfl.core.arrays import WeightedSum
from redfl.privacy import DPAdaptiveClipping, DPFixedClipping, RdpAccountant, sampled_gaussian_rdp
from redfl.privacy.accountant import DEFAULT_ORDERS

# -- accountant -----------------------------------------------------------------------------


def rdp_by_integration(q: float, sigma: float, alpha: int) -> float:
    """D_alpha((1-q) N(0,s^2) + q N(1,s^2) || N(0,s^2)) by numerical integration."""

    def integrand(z: float) -> float:
        log_base = -z * z / (2 * sigma**2) - 0.5 * math.log(2 * math.pi * sigma**2)
        ratio = (1 - q) + q * math.exp((2 * z - 1) / (2 * sigma**2))
        return math.exp(log_base + alpha * math.log(ratio))

    # The integrand peaks between 0 and alpha; beyond 30 sigma on either side it is nil.
    low, high = -30 * sigma, alpha + 30 * sigma
    value, _ = integrate.quad(
        integrand, low, high, points=[0.0, 0.5, alpha], limit=500, epsabs=0, epsrel=1e-12
    )
    return math.log(value) / (alpha - 1)


@pytest.mark.parametrize(
    ("q", "sigma", "alpha"), [(0.01, 1.0, 2), (0.1, 1.1, 8), (0.05, 2.0, 32), (0.3, 4.0, 16)]
)
def test_sampled_gaussian_rdp_equals_the_divergence_integral(q, sigma, alpha) -> None:
    assert sampled_gaussian_rdp(q, sigma, alpha) == pytest.approx(
        rdp_by_integration(q, sigma, alpha), rel=1e-6
    )


def test_without_sampling_rdp_is_the_gaussian_closed_form() -> None:
    for alpha in (2, 10, 100):
        assert sampled_gaussian_rdp(1.0, 1.5, alpha) == pytest.approx(alpha / (2 * 1.5**2))


def test_epsilon_is_the_best_order_of_the_rdp_conversion() -> None:
    sigma, steps, delta = 1.2, 30, 1e-5
    accountant = RdpAccountant()
    accountant.step(sigma, 1.0, steps)
    expected = min(
        steps * a / (2 * sigma**2) + math.log(1 / delta) / (a - 1) for a in DEFAULT_ORDERS
    )
    assert accountant.epsilon(delta) == pytest.approx(expected, rel=1e-12)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise_and_sampling() -> None:
    def eps(sigma: float, q: float, steps: int) -> float:
        accountant = RdpAccountant()
        accountant.step(sigma, q, steps)
        return accountant.epsilon(1e-5)

    assert eps(1.0, 0.1, 10) < eps(1.0, 0.1, 100)
    assert eps(2.0, 0.1, 100) < eps(1.0, 0.1, 100)
    assert eps(1.0, 0.01, 100) < eps(1.0, 0.1, 100)


def test_accountant_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="delta must be in"):
        RdpAccountant().epsilon(0.0)
    with pytest.raises(ValueError, match="sample rate"):
        sampled_gaussian_rdp(1.5, 1.0, 2)


# -- clipping and noise ---------------------------------------------------------------------


def updates_of(rng: np.random.Generator, n: int, scale: float) -> list[ClientUpdate]:
    return [
        ClientUpdate(f"c{i}", {"w": rng.normal(scale=scale, size=200)}, i + 1, {}) for i in range(n)
    ]


def clipped_mean(updates: list[ClientUpdate], x: np.ndarray, bound: float) -> np.ndarray:
    """McMahan et al. 2018: each delta scaled by min(1, C / ||delta||), equal weights."""
    total = np.zeros_like(x)
    for u in updates:
        delta = u.parameters["w"] - x
        total += delta * min(1.0, bound / float(np.sqrt(np.sum(delta**2))))
    return x + total / len(updates)


def test_server_side_clipping_without_noise_is_the_clipped_equal_mean() -> None:
    rng = np.random.default_rng(0)
    x = {"w": rng.normal(size=200)}
    updates = updates_of(rng, 6, 0.5)
    strategy = DPFixedClipping(FedAvg(), clipping_norm=2.0, noise_multiplier=0.0)
    assert strategy.weighted_sum is False
    got = strategy.aggregate_updates(1, x, updates)
    np.testing.assert_allclose(got["w"], clipped_mean(updates, x["w"], 2.0), atol=1e-12)


def test_noise_has_std_z_c_over_m() -> None:
    x = {"w": np.zeros(40_000)}
    updates = [ClientUpdate(f"c{i}", {"w": np.zeros(40_000)}, 1, {}) for i in range(8)]
    strategy = DPFixedClipping(FedAvg(), clipping_norm=3.0, noise_multiplier=2.0, seed=7)
    noise = strategy.aggregate_updates(1, x, updates)["w"]
    assert float(noise.std()) == pytest.approx(2.0 * 3.0 / 8, rel=0.02)
    assert abs(float(noise.mean())) < 0.02


def test_client_side_clipping_happens_on_workers_and_keeps_pre_aggregation() -> None:
    strategy = DPFixedClipping(FedAvg(), clipping_norm=1.5, noise_multiplier=0.0, side="client")
    assert strategy.weighted_sum is True
    policy = strategy.update_policy(1, ["a", "b"])
    assert policy.clip_norm == 1.5 and policy.equal_weights
    x = {"w": np.zeros(3)}
    clipped, weight, stats, reason = policy.apply({"w": np.array([3.0, 4.0, 0.0])}, x, 17)
    assert reason is None and weight == 1.0 and stats == {"unclipped": 0.0}
    np.testing.assert_allclose(clipped["w"], [0.9, 1.2, 0.0])


def test_adaptive_clipping_moves_the_norm_toward_the_quantile() -> None:
    rng = np.random.default_rng(2)
    x = {"w": np.zeros(200)}
    updates = updates_of(rng, 10, 0.1)  # norms about 1.4
    strategy = DPAdaptiveClipping(
        FedMedian(),
        initial_clipping_norm=1.0,
        noise_multiplier=0.0,
        target_quantile=0.5,
        clip_lr=0.2,
        clipped_count_stddev=0.0,
    )
    strategy.aggregate_updates(1, x, updates)
    below = sum(float(np.linalg.norm(u.parameters["w"])) <= 1.0 for u in updates)
    assert strategy.clipping_norm == 1.0  # state moves only at the end of the round
    strategy.end_round(RoundOutcome(1, 10, 10, 10))
    metrics = strategy.round_metrics(1, {})
    assert metrics["clipping_norm"] == 1.0  # the norm round 1 used
    assert metrics["unclipped_fraction"] == below / 10
    assert strategy.clipping_norm == pytest.approx(math.exp(-0.2 * (below / 10 - 0.5)))


def test_adaptive_clipping_needs_enough_count_noise() -> None:
    with pytest.raises(ParameterError, match="clipped_count_stddev: must exceed"):
        DPAdaptiveClipping(FedAvg(), noise_multiplier=4.0, clipped_count_stddev=1.0)


# -- in a federation ------------------------------------------------------------------------


class Drift(Client):
    """Moves every weight by (index + 1) / 10."""

    def fit(self, parameters, config):
        step = (self.context.index + 1) / 10
        return {"w": parameters["w"] + np.float32(step)}, 1, {}


def test_epsilon_goes_into_every_round_of_the_history() -> None:
    sigma, delta = 1.5, 1e-5
    strategy = DPFixedClipping(FedAvg(), clipping_norm=1.0, noise_multiplier=sigma, delta=delta)
    federation = StarFederation(
        Drift,
        4,
        initial_parameters={"w": np.zeros(5, np.float32)},
        strategy=strategy,
        runtime="local",
    )
    history = federation.train(3).history
    for t, record in enumerate(history, 1):  # all 4 clients every round: q = 1
        expected = min(
            t * a / (2 * sigma**2) + math.log(1 / delta) / (a - 1) for a in DEFAULT_ORDERS
        )
        assert record.metrics["epsilon"] == pytest.approx(expected, rel=1e-9)
        assert record.metrics["clipping_norm"] == 1.0


def test_client_side_and_server_side_clipping_agree_in_a_federation() -> None:
    results = []
    for side in ("server", "client"):
        strategy = DPFixedClipping(FedAvg(), clipping_norm=0.25, noise_multiplier=0.0, side=side)
        federation = StarFederation(
            Drift,
            4,
            initial_parameters={"w": np.zeros(4, np.float32)},
            strategy=strategy,
            runtime="local",
        )
        results.append(federation.train(2).parameters)
    # Per round every delta (norm 0.2, 0.4, 0.6, 0.8) is clipped to 0.25 except the first.
    step = (0.2 + 3 * 0.25) / 4
    for parameters in results:
        assert parameters is not None
        np.testing.assert_allclose(parameters["w"], np.full(4, 2 * step / 2), atol=1e-6)


def test_cli_summary_reports_epsilon(tmp_path: Path) -> None:
    config = tmp_path / "dp.toml"
    config.write_text(
        """
[federation]
rounds = 2
runtime = "local"

[client]
target = "redfl.examples.digits:DigitsClient"
num_clients = 6

[strategy]
name = "fedavg"

[privacy]
mode = "fixed"
clipping_norm = 1.0
noise_multiplier = 1.0
""",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    accountant = RdpAccountant()
    accountant.step(1.0, 1.0, 2)
    assert summary["epsilon"] == pytest.approx(accountant.epsilon(1e-5))
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["metrics"]["epsilon"] > 0 for line in lines] == [True, True]


def test_weighted_sum_total_is_used_for_client_side_dp() -> None:
    strategy = DPFixedClipping(FedAvg(), clipping_norm=1.0, noise_multiplier=0.0, side="client")
    total = WeightedSum()
    total.add({"w": np.array([1.0])}, 1.0)
    total.add({"w": np.array([3.0])}, 1.0)
    assert strategy.aggregate(1, {"w": np.zeros(1)}, total)["w"][0] == pytest.approx(2.0)
