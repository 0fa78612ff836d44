"""Tests for client sampling, the Strategy base class and FedAvg."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from redfl.algorithms import ClientUpdate, FedAvg, Strategy, sample_clients
from redfl.core.arrays import WeightedSum
from redfl.core.seeding import round_rng

IDS = [f"client-{i}" for i in range(100)]


def expected_count(n: int, fraction: float, minimum: int) -> int:
    """max(minimum, ceil(fraction * n)) capped at n, with exact decimal arithmetic."""
    return min(n, max(minimum, math.ceil(Fraction(str(fraction)) * n)))


@pytest.mark.parametrize(
    ("n", "fraction", "minimum"),
    [
        (10, 0.3, 1),  # 0.3 * 10 is 3.0000000000000004 in floats: still 3 clients
        (10, 0.25, 1),  # ceil(2.5) = 3
        (10, 0.0, 2),
        (10, 0.1, 5),
        (7, 0.5, 1),
        (100, 0.07, 2),
        (100, 0.99, 1),
        (10, 1.0, 3),
        (3, 0.0, 3),
    ],
)
def test_sample_count(n: int, fraction: float, minimum: int) -> None:
    available = IDS[:n]
    picked = sample_clients(available, fraction, minimum, round_rng(0, 1))
    assert len(picked) == expected_count(n, fraction, minimum)
    assert len(set(picked)) == len(picked)
    assert set(picked) <= set(available)


def test_sample_keeps_input_order() -> None:
    available = [f"n{i}" for i in (5, 3, 9, 1, 7, 2, 8, 0, 6, 4)]
    for rnd in range(1, 20):
        picked = sample_clients(available, 0.4, 1, round_rng(5, rnd))
        positions = [available.index(p) for p in picked]
        assert positions == sorted(positions)


def test_full_fraction_returns_every_client_in_order() -> None:
    available = ["z", "a", "m"]
    assert sample_clients(available, 1.0, 1, round_rng(0, 1)) == ["z", "a", "m"]


def test_sample_is_deterministic_for_seed_and_round() -> None:
    first = sample_clients(IDS, 0.1, 1, round_rng(123, 4))
    second = sample_clients(IDS, 0.1, 1, round_rng(123, 4))
    assert first == second


def test_sample_differs_across_rounds_and_seeds() -> None:
    by_round = [tuple(sample_clients(IDS, 0.1, 1, round_rng(123, rnd))) for rnd in (1, 2, 3)]
    assert len(set(by_round)) == 3
    other_seed = tuple(sample_clients(IDS, 0.1, 1, round_rng(124, 1)))
    assert other_seed != by_round[0]


def test_round_rng_streams_differ() -> None:
    assert round_rng(1, 1, 0).integers(2**62) != round_rng(1, 1, 1).integers(2**62)


def test_fewer_available_than_minimum_is_an_error() -> None:
    with pytest.raises(ValueError) as info:
        sample_clients(IDS[:3], 1.0, 4, round_rng(0, 1))
    message = str(info.value)
    assert "4" in message
    assert "3" in message


# -- Strategy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"fraction_fit": -0.1}, "fraction_fit"),
        ({"fraction_fit": 1.1}, "fraction_fit"),
        ({"fraction_evaluate": 2.0}, "fraction_evaluate"),
        ({"fraction_evaluate": -1.0}, "fraction_evaluate"),
        ({"min_fit_clients": 0}, "min_fit_clients"),
        ({"min_evaluate_clients": -1}, "min_evaluate_clients"),
    ],
)
def test_strategy_validation_names_the_argument(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name) as info:
        Strategy(**kwargs)
    assert str(next(iter(kwargs.values()))) in str(info.value)


def test_configure_fit_uses_fraction_and_minimum() -> None:
    strategy = FedAvg(fraction_fit=0.2, min_fit_clients=3)
    picked = strategy.configure_fit(1, IDS[:10], round_rng(0, 1))
    assert len(picked) == 3  # max(3, ceil(0.2 * 10) = 2)
    assert picked == sample_clients(IDS[:10], 0.2, 3, round_rng(0, 1))


def test_configure_evaluate_is_empty_by_default() -> None:
    assert Strategy().configure_evaluate(1, IDS, round_rng(0, 1)) == []
    assert FedAvg().configure_evaluate(3, IDS, round_rng(0, 3)) == []


def test_configure_evaluate_samples_when_asked() -> None:
    strategy = FedAvg(fraction_evaluate=0.5)
    assert len(strategy.configure_evaluate(1, IDS[:10], round_rng(0, 1, 1))) == 5
    only_minimum = FedAvg(min_evaluate_clients=2)
    assert len(only_minimum.configure_evaluate(1, IDS[:10], round_rng(0, 1, 1))) == 2


def test_fit_config_holds_the_round() -> None:
    assert FedAvg().fit_config(7)["round"] == 7


def test_base_strategy_aggregate_must_be_overridden() -> None:
    class Median(Strategy):
        pass

    total = WeightedSum()
    total.add({"w": np.zeros(1)}, 1.0)
    with pytest.raises(TypeError, match="Median"):
        Median().aggregate(1, {"w": np.zeros(1)}, total)


# -- FedAvg ---------------------------------------------------------------------------------


def test_fedavg_weights_updates_by_examples() -> None:
    current = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    rows = [
        ([[1.0, 2.0], [3.0, 4.0]], [1.0, -1.0], 10),
        ([[0.0, 0.0], [1.0, 1.0]], [5.0, 5.0], 30),
        ([[-4.0, 8.0], [2.0, 0.0]], [0.0, 2.0], 60),
    ]
    updates = [
        ClientUpdate(
            f"c{i}",
            {"w": np.array(w, np.float32), "b": np.array(b, np.float32)},
            n,
            {},
        )
        for i, (w, b, n) in enumerate(rows)
    ]
    total_n = sum(n for _, _, n in rows)
    expected_w = [
        [sum(n * w[r][c] for w, _, n in rows) / total_n for c in range(2)] for r in range(2)
    ]
    expected_b = [sum(n * b[c] for _, b, n in rows) / total_n for c in range(2)]

    result = FedAvg().aggregate_updates(1, current, updates)
    np.testing.assert_allclose(result["w"], expected_w, rtol=1e-6)
    np.testing.assert_allclose(result["b"], expected_b, rtol=1e-6)
    assert result["w"].dtype == np.float32

    total = WeightedSum()
    for update in updates:
        total.add(update.parameters, float(update.num_examples))
    folded = FedAvg().aggregate(1, current, total)
    np.testing.assert_array_equal(folded["w"], result["w"])
    np.testing.assert_array_equal(folded["b"], result["b"])


def test_fedavg_of_equal_updates_is_that_update() -> None:
    update = {"w": np.array([0.1, 0.2, 0.3], np.float32)}
    updates = [ClientUpdate(f"c{i}", update, n, {}) for i, n in enumerate((1, 5, 9))]
    result = FedAvg().aggregate_updates(1, {"w": np.zeros(3, np.float32)}, updates)
    np.testing.assert_allclose(result["w"], update["w"], rtol=1e-6)
