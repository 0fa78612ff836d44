"""Every strategy's math against an independent computation from its paper's formulas."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from redfl.algorithms import (
    STRATEGIES,
    Bulyan,
    ClientUpdate,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    ParameterError,
    QFedAvg,
    Strategy,
    make_strategy,
)
from redfl.algorithms.strategy import RoundOutcome
from redfl.core.arrays import WeightedSum
from redfl.core.instructions import Instructions

SHAPES = {"w": (3, 4), "b": (4,)}


def random_updates(
    rng: np.random.Generator, n: int, dtype: type = np.float64
) -> list[ClientUpdate]:
    return [
        ClientUpdate(
            f"c{i}",
            {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()},
            int(rng.integers(1, 50)),
            {"loss": float(rng.uniform(0.1, 3.0))},
        )
        for i in range(n)
    ]


def current(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: rng.normal(size=s) for k, s in SHAPES.items()}


def fold(updates: list[ClientUpdate]) -> WeightedSum:
    total = WeightedSum()
    for u in updates:
        total.add(u.parameters, float(u.num_examples))
    return total


def weighted_mean(updates: list[ClientUpdate], name: str) -> np.ndarray:
    """sum_i n_i w_i / sum_i n_i, written element by element."""
    out = np.zeros(SHAPES[name])
    for index in np.ndindex(*SHAPES[name]):
        num = sum(u.num_examples * u.parameters[name][index] for u in updates)
        out[index] = num / sum(u.num_examples for u in updates)
    return out


def flat(parameters: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(parameters[k]) for k in SHAPES])


# -- weighted-sum family ------------------------------------------------------------------


def test_fedavg_is_the_example_weighted_mean() -> None:
    rng = np.random.default_rng(1)
    updates = random_updates(rng, 7)
    got = FedAvg().aggregate(1, current(rng), fold(updates))
    for name in SHAPES:
        np.testing.assert_allclose(got[name], weighted_mean(updates, name), atol=1e-12)


def test_fedavgm_applies_server_momentum_over_rounds() -> None:
    rng = np.random.default_rng(2)
    eta, beta = 0.7, 0.5
    strategy = FedAvgM(server_learning_rate=eta, server_momentum=beta)
    x = current(rng)
    velocity = {k: np.zeros(s) for k, s in SHAPES.items()}
    expected = {k: v.copy() for k, v in x.items()}
    for rnd in range(1, 4):
        updates = random_updates(rng, 5)
        for k in SHAPES:  # Hsu et al.: v = beta v + (x - avg); x = x - eta v
            velocity[k] = beta * velocity[k] + (expected[k] - weighted_mean(updates, k))
            expected[k] = expected[k] - eta * velocity[k]
        x = strategy.aggregate(rnd, x, fold(updates))
        for k in SHAPES:
            np.testing.assert_allclose(x[k], expected[k], atol=1e-10)


def test_fedprox_sends_mu_and_aggregates_like_fedavg() -> None:
    rng = np.random.default_rng(3)
    updates = random_updates(rng, 4)
    strategy = FedProx(proximal_mu=0.25)
    config = strategy.fit_config(2)
    assert config.proximal_mu == 0.25  # a typed field
    assert dict(config) == {"round": 2, "phase": "fit", "proximal_mu": 0.25}
    got = strategy.aggregate(1, current(rng), fold(updates))
    np.testing.assert_allclose(got["w"], weighted_mean(updates, "w"), atol=1e-12)


def reddi(
    rule: str,
    eta: float,
    b1: float,
    b2: float,
    tau: float,
    rounds: list[list[ClientUpdate]],
    x0: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Reddi et al. Algorithm 2, coordinate by coordinate with Python floats."""
    x = {k: v.copy() for k, v in x0.items()}
    m = {k: np.zeros(s) for k, s in SHAPES.items()}
    v = {k: np.zeros(s) for k, s in SHAPES.items()}
    for updates in rounds:
        for k in SHAPES:
            avg = weighted_mean(updates, k)
            for i in np.ndindex(*SHAPES[k]):
                d = avg[i] - x[k][i]
                m[k][i] = b1 * m[k][i] + (1 - b1) * d
                if rule == "adagrad":
                    v[k][i] = v[k][i] + d * d
                elif rule == "yogi":
                    v[k][i] = v[k][i] - (1 - b2) * d * d * math.copysign(1, v[k][i] - d * d) * (
                        v[k][i] != d * d
                    )
                else:
                    v[k][i] = b2 * v[k][i] + (1 - b2) * d * d
                x[k][i] = x[k][i] + eta * m[k][i] / (math.sqrt(v[k][i]) + tau)
    return x


@pytest.mark.parametrize(
    ("cls", "rule"), [(FedAdam, "adam"), (FedYogi, "yogi"), (FedAdagrad, "adagrad")]
)
def test_fedopt_matches_reddi_algorithm_2(cls: type, rule: str) -> None:
    rng = np.random.default_rng(4)
    params = {"eta": 0.05, "beta_1": 0.8, "beta_2": 0.95, "tau": 1e-3}
    strategy = cls(**params)
    x0 = current(rng)
    rounds = [random_updates(rng, 6) for _ in range(4)]
    x = x0
    for rnd, updates in enumerate(rounds, 1):
        x = strategy.aggregate(rnd, x, fold(updates))
    expected = reddi(rule, params["eta"], params["beta_1"], params["beta_2"], 1e-3, rounds, x0)
    for k in SHAPES:
        np.testing.assert_allclose(x[k], expected[k], atol=1e-9)


def test_fedopt_sends_the_client_learning_rate() -> None:
    config = Instructions.of(FedAdam(eta_l=0.03).fit_config(1))
    assert config.learning_rate == 0.03 and config["learning_rate"] == 0.03
    assert "learning_rate" not in FedYogi().fit_config(1)


# -- robust family ---------------------------------------------------------------------------


def test_median_is_coordinatewise_and_unweighted() -> None:
    rng = np.random.default_rng(5)
    updates = random_updates(rng, 7)
    got = FedMedian().aggregate_updates(1, current(rng), updates)
    for k in SHAPES:
        for i in np.ndindex(*SHAPES[k]):
            values = sorted(u.parameters[k][i] for u in updates)
            assert got[k][i] == pytest.approx(values[3], abs=1e-12)  # middle of 7


@pytest.mark.parametrize(("beta", "n"), [(0.0, 5), (0.2, 10), (0.25, 9), (0.49, 8)])
def test_trimmed_mean_drops_floor_beta_n_at_each_end(beta: float, n: int) -> None:
    rng = np.random.default_rng(6)
    updates = random_updates(rng, n)
    got = FedTrimmedAvg(beta=beta).aggregate_updates(1, current(rng), updates)
    cut = int(beta * n)
    for k in SHAPES:
        for i in np.ndindex(*SHAPES[k]):
            values = sorted(u.parameters[k][i] for u in updates)[cut : n - cut]
            assert got[k][i] == pytest.approx(sum(values) / len(values), abs=1e-12)


def krum_reference(vectors: list[np.ndarray], f: int) -> list[float]:
    """Blanchard et al.: score(i) = sum of squared distances to the n - f - 2 closest."""
    scores = []
    for i, vi in enumerate(vectors):
        dist = sorted(float(np.sum((vi - vj) ** 2)) for j, vj in enumerate(vectors) if j != i)
        scores.append(sum(dist[: len(vectors) - f - 2]))
    return scores


def test_krum_picks_the_lowest_score_and_ignores_outliers() -> None:
    rng = np.random.default_rng(7)
    updates = random_updates(rng, 9)
    for u in updates[:2]:  # two far-away attackers
        for k in SHAPES:
            u.parameters[k][...] += 100.0
    got = Krum(f=2).aggregate_updates(1, current(rng), updates)
    scores = krum_reference([flat(u.parameters) for u in updates], 2)
    best = updates[int(np.argmin(scores))]
    assert best.node_id not in ("c0", "c1")
    np.testing.assert_array_equal(flat(got), flat(best.parameters))


def test_multikrum_averages_the_m_best_plainly() -> None:
    rng = np.random.default_rng(8)
    updates = random_updates(rng, 10)
    got = MultiKrum(f=2, m=4).aggregate_updates(1, current(rng), updates)
    scores = krum_reference([flat(u.parameters) for u in updates], 2)
    best = sorted(range(10), key=lambda i: scores[i])[:4]
    expected = sum(flat(updates[i].parameters) for i in best) / 4
    np.testing.assert_allclose(flat(got), expected, atol=1e-12)


def test_bulyan_matches_el_mhamdi_et_al() -> None:
    rng = np.random.default_rng(9)
    f, n = 2, 12
    updates = random_updates(rng, n)
    got = Bulyan(f=f).aggregate_updates(1, current(rng), updates)
    remaining = [flat(u.parameters) for u in updates]
    selected = []
    for _ in range(n - 2 * f):  # theta = n - 2f rounds of Krum on what is left
        scores = krum_reference(remaining, f)
        selected.append(remaining.pop(int(np.argmin(scores))))
    beta = len(selected) - 2 * f
    expected = np.zeros_like(selected[0])
    for j in range(len(expected)):
        column = [s[j] for s in selected]
        median = float(np.median(column))
        nearest = sorted(column, key=lambda value: abs(value - median))[:beta]
        expected[j] = sum(nearest) / beta
    np.testing.assert_allclose(flat(got), expected, atol=1e-12)


def test_qfedavg_matches_li_et_al_algorithm_2() -> None:
    rng = np.random.default_rng(10)
    q, lr = 0.5, 0.1
    x = current(rng)
    updates = random_updates(rng, 5)
    got = QFedAvg(q=q, learning_rate=lr).aggregate_updates(1, x, updates)
    lip = 1 / lr
    deltas, hs = [], []
    for u in updates:
        loss = u.metrics["loss"] + 1e-10
        dw = lip * (flat(x) - flat(u.parameters))
        deltas.append(loss**q * dw)
        hs.append(q * loss ** (q - 1) * float(dw @ dw) + lip * loss**q)
    expected = flat(x) - sum(deltas) / sum(hs)
    np.testing.assert_allclose(flat(got), expected, atol=1e-12)


def test_results_keep_the_dtype_of_the_global_model() -> None:
    rng = np.random.default_rng(11)
    updates = random_updates(rng, 9, np.float32)
    x = {k: v.astype(np.float32) for k, v in current(rng).items()}
    for strategy in (FedMedian(), FedTrimmedAvg(), Krum(f=1), Bulyan(f=1), QFedAvg()):
        assert {v.dtype for v in strategy.aggregate_updates(1, x, updates).values()} == {
            np.dtype(np.float32)
        }


# -- invalid parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "parameter", "bound"),
    [
        (lambda: FedTrimmedAvg(beta=0.5), "beta", "[0, 0.5)"),
        (lambda: FedTrimmedAvg(beta=-0.1), "beta", "[0, 0.5)"),
        (lambda: Krum(f=3, min_fit_clients=8), "f", "2f + 3 = 9"),
        (lambda: MultiKrum(f=1, m=0), "m", ">= 1"),
        (lambda: MultiKrum(f=1, m=9, min_fit_clients=9), "f", "m + f"),
        (lambda: Bulyan(f=2, min_fit_clients=10), "f", "4f + 3 = 11"),
        (lambda: FedAvgM(server_momentum=1.0), "server_momentum", "[0, 1)"),
        (lambda: FedAdam(tau=0.0), "tau", "> 0"),
        (lambda: FedYogi(beta_2=1.0), "beta_2", "[0, 1)"),
        (lambda: FedProx(proximal_mu=-1.0), "proximal_mu", ">= 0"),
        (lambda: QFedAvg(q=-1.0), "q", ">= 0"),
        (lambda: FedAvg(max_update_norm=0.0), "max_update_norm", "> 0"),
    ],
)
def test_bad_parameter_is_named_with_its_bound(build, parameter: str, bound: str) -> None:
    with pytest.raises(ParameterError) as caught:
        build()
    assert caught.value.parameter == parameter
    assert bound in str(caught.value)


def test_krum_round_size_check_names_f_and_the_bound() -> None:
    with pytest.raises(ParameterError, match=r"f: Krum needs 2f \+ 3 = 11 .* a round has 10"):
        Krum(f=4).check_round_size(10)
    Krum(f=4).check_round_size(11)


def test_robust_default_min_fit_clients_is_the_bound() -> None:
    assert Krum(f=2).min_fit_clients == 7
    assert Bulyan(f=2).min_fit_clients == 11
    assert MultiKrum(f=1, m=6).min_fit_clients == 7


def test_registry_lists_every_strategy_with_defaults() -> None:
    assert set(STRATEGIES) == {
        "fedavg",
        "fedavgm",
        "fedprox",
        "fedadam",
        "fedyogi",
        "fedadagrad",
        "fedmedian",
        "fedtrimmedavg",
        "krum",
        "multikrum",
        "bulyan",
        "qfedavg",
    }
    assert STRATEGIES["fedtrimmedavg"].parameters() == {"beta": 0.2}
    assert STRATEGIES["krum"].parameters() == {"f": 1}
    assert STRATEGIES["fedavg"].pre_aggregates and not STRATEGIES["krum"].pre_aggregates
    assert isinstance(make_strategy("fedadam", eta=0.2), FedAdam)


def test_make_strategy_refuses_unknown_names_and_parameters_and_types() -> None:
    with pytest.raises(ParameterError, match="name: unknown strategy 'fedsgd'"):
        make_strategy("fedsgd")
    with pytest.raises(ParameterError, match="beta1: not a parameter of fedadam"):
        make_strategy("fedadam", beta1=0.9)
    with pytest.raises(ParameterError, match=r"f: Input should be a valid integer, got 2\.5"):
        make_strategy("krum", f=2.5)


def test_state_round_trip_resumes_stateful_strategies_exactly() -> None:
    import copy

    from redfl.privacy import DPAdaptiveClipping

    def dp() -> Strategy:
        return DPAdaptiveClipping(FedYogi(), noise_multiplier=0.8, side="client", seed=3)

    makers: list[Callable[[], Strategy]] = [
        lambda: FedAvgM(server_momentum=0.7),
        lambda: FedAdam(eta=0.05),
        dp,
    ]
    for make in makers:
        rng = np.random.default_rng(12)
        start = current(rng)
        rounds = [fold(random_updates(rng, 5)) for _ in range(4)]
        straight = make()
        x = start
        for rnd, total in enumerate(rounds, 1):
            x = straight.aggregate(rnd, x, total)
            straight.end_round(RoundOutcome(rnd, 10, 5, 5, {"unclipped": 2.0}))
            straight.round_metrics(rnd, {"unclipped": 2.0})
        first = make()
        y = start
        for rnd, total in enumerate(rounds[:2], 1):
            y = first.aggregate(rnd, y, total)
            first.end_round(RoundOutcome(rnd, 10, 5, 5, {"unclipped": 2.0}))
            first.round_metrics(rnd, {"unclipped": 2.0})
        resumed = make()
        resumed.load_state(copy.deepcopy(first.state()))
        for rnd, total in enumerate(rounds[2:], 3):
            y = resumed.aggregate(rnd, y, total)
            resumed.end_round(RoundOutcome(rnd, 10, 5, 5, {"unclipped": 2.0}))
            resumed.round_metrics(rnd, {"unclipped": 2.0})
        for k in SHAPES:
            np.testing.assert_array_equal(x[k], y[k])
        assert resumed.state().keys() == straight.state().keys()
    assert FedMedian().state() == {}
