"""Lazily generated digits clients: data is a function of (data_seed, index) only."""

from __future__ import annotations

import numpy as np

from redfl.data.digits import load_digits_arrays
from redfl.examples.lazy_digits import LazyDigitsOptions, lazy_client_data


def test_each_example_is_a_digit_of_its_label() -> None:
    x_all, y_all = load_digits_arrays()
    x, y = lazy_client_data(LazyDigitsOptions(size=200), 7)
    assert x.shape == (200, 64) and y.shape == (200,)
    for row, label in zip(x, y, strict=True):
        matches = np.flatnonzero((x_all == row).all(axis=1))
        assert matches.size > 0 and label in set(y_all[matches].tolist())


def test_same_seed_and_index_give_the_same_data_and_others_differ() -> None:
    options = LazyDigitsOptions(size=50)
    a, b = lazy_client_data(options, 3), lazy_client_data(options, 3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    other = lazy_client_data(options, 4)
    reseeded = lazy_client_data(LazyDigitsOptions(size=50, data_seed=1), 3)
    assert not np.array_equal(a[0], other[0]) and not np.array_equal(a[0], reseeded[0])


def test_small_alpha_skews_labels_and_large_alpha_spreads_them() -> None:
    def distinct(alpha: float) -> float:
        options = LazyDigitsOptions(size=100, alpha=alpha)
        return float(np.mean([len(set(lazy_client_data(options, i)[1])) for i in range(30)]))

    assert distinct(0.05) < 4 < 9 < distinct(1000.0)


def test_every_row_of_a_label_can_be_drawn() -> None:
    x_all, y_all = load_digits_arrays()
    options = LazyDigitsOptions(size=10_000, alpha=1000.0)
    seen: set[bytes] = set()
    for index in range(5):  # about 5,000 draws of the ~180 zeros: missing one is ~e^-28
        x, y = lazy_client_data(options, index)
        seen.update(row.tobytes() for row in x[y == 0])
    assert seen == {row.tobytes() for row in x_all[y_all == 0]}
