"""Tests for the digits loader, the train/test split and the partitioners."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sklearn.datasets import load_digits

from redfl.data import (
    PARTITIONER_NAMES,
    DirichletPartitioner,
    IidPartitioner,
    Partitioner,
    ShardPartitioner,
    load_digits_arrays,
    partition_by_name,
    train_test_split,
)

N_DIGITS = 1797


@pytest.fixture(scope="module")
def train_labels() -> np.ndarray:
    """Labels of an 80% training split of digits (1438 samples)."""
    x, y = load_digits_arrays()
    return train_test_split(x, y, test_fraction=0.2, seed=0)[1]


def check_partition(parts: list[np.ndarray], n: int, num_parts: int, complete: bool) -> None:
    """Assert parts are sorted int64, disjoint, in range, and (if complete) cover 0..n-1."""
    assert len(parts) == num_parts
    for part in parts:
        assert part.dtype == np.int64
        assert part.ndim == 1
        assert np.all(np.diff(part) > 0), "each part must be sorted without duplicates"
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined), "parts must be disjoint"
    assert joined.min() >= 0 and joined.max() < n
    if complete:
        np.testing.assert_array_equal(np.sort(joined), np.arange(n))


def dominant_share(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean over parts of the fraction of the part's samples carrying its most common label."""
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


# --- digits loader ---------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_range() -> None:
    x, y = load_digits_arrays()
    assert x.shape == (N_DIGITS, 64) and x.dtype == np.float32
    assert y.shape == (N_DIGITS,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


def test_digits_is_a_seeded_shuffle_of_sklearn_digits() -> None:
    raw = load_digits()
    x, y = load_digits_arrays(seed=3)
    order = np.random.default_rng(3).permutation(N_DIGITS)
    np.testing.assert_array_equal(y, raw.target[order])
    np.testing.assert_allclose(x, raw.data[order] / 16.0, rtol=0, atol=1e-7)
    assert not np.array_equal(y, raw.target), "rows must be shuffled"


def test_digits_tile_multiplies_rows() -> None:
    x1, y1 = load_digits_arrays(tile=1)
    x3, y3 = load_digits_arrays(tile=3)
    assert x3.shape == (3 * N_DIGITS, 64) and y3.shape == (3 * N_DIGITS,)
    np.testing.assert_array_equal(np.bincount(y3), 3 * np.bincount(y1))
    assert np.isclose(x3.sum(dtype=np.float64), 3 * x1.sum(dtype=np.float64))


def test_digits_seed_determinism_survives_cache_clear() -> None:
    x_a, y_a = load_digits_arrays(tile=2, seed=5)
    load_digits_arrays.cache_clear()
    x_b, y_b = load_digits_arrays(tile=2, seed=5)
    assert x_a is not x_b
    np.testing.assert_array_equal(x_a, x_b)
    np.testing.assert_array_equal(y_a, y_b)
    _, y_c = load_digits_arrays(tile=2, seed=6)
    assert not np.array_equal(y_a, y_c)
    np.testing.assert_array_equal(np.sort(y_a), np.sort(y_c))


def test_digits_arrays_are_read_only_and_cached() -> None:
    x, y = load_digits_arrays()
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0] = 5.0
    with pytest.raises(ValueError, match="read-only"):
        y[0] = 5
    assert load_digits_arrays()[0] is x


def test_digits_rejects_bad_tile() -> None:
    with pytest.raises(ValueError, match="tile"):
        load_digits_arrays(tile=0)


# --- train/test split ------------------------------------------------------------------------


def test_split_sizes_disjoint_and_deterministic() -> None:
    x = np.arange(100, dtype=np.float32).reshape(50, 2)
    y = np.arange(50)
    x_tr, y_tr, x_te, y_te = train_test_split(x, y, test_fraction=0.2, seed=1)
    assert (len(y_tr), len(y_te)) == (40, 10)
    np.testing.assert_array_equal(np.sort(np.concatenate([y_tr, y_te])), y)
    np.testing.assert_array_equal(x_tr[:, 0], 2 * y_tr)  # rows stay paired with labels
    np.testing.assert_array_equal(x_te[:, 0], 2 * y_te)
    again = train_test_split(x, y, test_fraction=0.2, seed=1)
    np.testing.assert_array_equal(again[3], y_te)
    assert not np.array_equal(train_test_split(x, y, test_fraction=0.2, seed=2)[3], y_te)


def test_split_zero_test_fraction_gives_empty_test_set() -> None:
    x, y = load_digits_arrays()
    x_tr, y_tr, x_te, y_te = train_test_split(x, y, test_fraction=0.0, seed=0)
    assert x_tr.shape == (N_DIGITS, 64) and y_tr.shape == (N_DIGITS,)
    assert x_te.shape == (0, 64) and y_te.shape == (0,)
    assert x_te.dtype == np.float32 and y_te.dtype == np.int64


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_rejects_bad_fraction(fraction: float) -> None:
    x, y = load_digits_arrays()
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(x, y, test_fraction=fraction, seed=0)


# --- partitioners ----------------------------------------------------------------------------


@pytest.mark.parametrize("num_parts", [1, 7, 100, 1438])
def test_iid_sizes_differ_by_at_most_one(train_labels: np.ndarray, num_parts: int) -> None:
    parts = IidPartitioner(seed=0).partition(train_labels, num_parts)
    check_partition(parts, len(train_labels), num_parts, complete=True)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_honours_min_size_on_digits_split(train_labels: np.ndarray) -> None:
    parts = DirichletPartitioner(alpha=0.5, min_size=5, seed=0).partition(train_labels, 100)
    check_partition(parts, len(train_labels), 100, complete=True)
    assert min(len(p) for p in parts) >= 5


def test_dirichlet_many_parts_on_tiled_digits() -> None:
    _, y = load_digits_arrays(tile=4)
    parts = DirichletPartitioner(alpha=0.5, min_size=1, seed=0).partition(y, 1000)
    check_partition(parts, len(y), 1000, complete=True)
    assert min(len(p) for p in parts) >= 1


def test_dirichlet_top_up_reaches_a_tight_min_size(train_labels: np.ndarray) -> None:
    # alpha=0.01 almost never gives 14 samples to each of 100 parts: exercises the repair path.
    parts = DirichletPartitioner(alpha=0.01, min_size=14, seed=0).partition(train_labels, 100)
    check_partition(parts, len(train_labels), 100, complete=True)
    assert min(len(p) for p in parts) >= 14


def test_dirichlet_accepts_arbitrary_label_values() -> None:
    labels = np.repeat(np.array([-3, 7, 100]), 20)
    parts = DirichletPartitioner(alpha=1.0, min_size=2, seed=0).partition(labels, 5)
    check_partition(parts, len(labels), 5, complete=True)
    assert min(len(p) for p in parts) >= 2


def test_dirichlet_is_label_skewed(train_labels: np.ndarray) -> None:
    for seed in range(3):
        iid = dominant_share(train_labels, IidPartitioner(seed).partition(train_labels, 20))
        skewed = DirichletPartitioner(alpha=0.1, seed=seed).partition(train_labels, 20)
        flat = DirichletPartitioner(alpha=100.0, seed=seed).partition(train_labels, 20)
        assert dominant_share(train_labels, skewed) > iid + 0.3
        assert dominant_share(train_labels, flat) < 0.2


def test_shard_sizes_dropped_remainder_and_label_count(train_labels: np.ndarray) -> None:
    n, num_parts = len(train_labels), 100
    shard_size = n // (num_parts * 2)
    # With every class larger than a shard, a shard spans <= 2 labels, so a part <= 4.
    assert np.bincount(train_labels).min() > shard_size
    parts = ShardPartitioner(shards_per_client=2, seed=0).partition(train_labels, num_parts)
    check_partition(parts, n, num_parts, complete=False)
    assert all(len(p) == 2 * shard_size for p in parts)
    assert sum(len(p) for p in parts) == n - n % (num_parts * 2)
    label_counts = [len(np.unique(train_labels[p])) for p in parts]
    assert max(label_counts) <= 4
    iid = IidPartitioner(0).partition(train_labels, num_parts)
    assert np.mean(label_counts) < 0.5 * np.mean([len(np.unique(train_labels[p])) for p in iid])


def test_shard_without_remainder_uses_every_index() -> None:
    labels = np.repeat(np.arange(5), 8)  # 40 samples, 10 shards of 4, all within one label
    parts = ShardPartitioner(shards_per_client=2, seed=1).partition(labels, 5)
    check_partition(parts, 40, 5, complete=True)
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: IidPartitioner(seed=seed),
        lambda seed: DirichletPartitioner(alpha=0.5, min_size=5, seed=seed),
        lambda seed: ShardPartitioner(shards_per_client=2, seed=seed),
    ],
    ids=["iid", "dirichlet", "shard"],
)
def test_partitioners_are_deterministic_per_seed(
    train_labels: np.ndarray, make: Callable[[int], Partitioner]
) -> None:
    a, b, c = (make(seed).partition(train_labels, 50) for seed in (0, 0, 1))
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c, strict=True))


@pytest.mark.parametrize(
    "partitioner",
    [IidPartitioner(), DirichletPartitioner(alpha=0.5, min_size=0), ShardPartitioner(1)],
    ids=["iid", "dirichlet", "shard"],
)
@pytest.mark.parametrize("num_parts", [0, -1, 61])
def test_partitioners_reject_bad_num_parts(partitioner: Partitioner, num_parts: int) -> None:
    labels = np.repeat(np.arange(3), 20)
    with pytest.raises(ValueError, match="num_parts"):
        partitioner.partition(labels, num_parts)


@pytest.mark.parametrize("alpha", [-1.0, 0.0, float("nan"), float("inf")])
def test_dirichlet_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha must be > 0"):
        DirichletPartitioner(alpha=alpha)


def test_dirichlet_rejects_negative_min_size() -> None:
    with pytest.raises(ValueError, match="min_size must be >= 0"):
        DirichletPartitioner(alpha=0.5, min_size=-1)


def test_dirichlet_rejects_impossible_min_size(train_labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"min_size.*impossible.*2000 > 1438"):
        DirichletPartitioner(alpha=0.5, min_size=20).partition(train_labels, 100)


def test_shard_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="shards_per_client must be >= 1"):
        ShardPartitioner(shards_per_client=0)
    labels = np.arange(10) % 2
    with pytest.raises(ValueError, match="shards_per_client"):
        ShardPartitioner(shards_per_client=3).partition(labels, 4)


def test_partition_by_name_builds_each_partitioner() -> None:
    def build(name: str) -> Partitioner:
        return partition_by_name(name, alpha=0.3, min_size=4, shards_per_client=3, seed=9)

    assert PARTITIONER_NAMES == ("iid", "dirichlet", "shard")
    assert build("iid") == IidPartitioner(seed=9)
    assert build("dirichlet") == DirichletPartitioner(alpha=0.3, min_size=4, seed=9)
    assert build("shard") == ShardPartitioner(shards_per_client=3, seed=9)


def test_partition_by_name_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="'iid', 'dirichlet', 'shard'") as info:
        partition_by_name("pathological", alpha=0.5, min_size=1, shards_per_client=2, seed=0)
    assert "pathological" in str(info.value)
