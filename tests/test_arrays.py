"""Tests for named-array checks and the float64 weighted sums workers fold updates into."""

from __future__ import annotations

import numpy as np
import pytest

from redfl.core.arrays import Parameters, WeightedSum, check_update, copy_parameters


@pytest.fixture
def reference() -> Parameters:
    return {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}


def good_update() -> Parameters:
    return {"w": np.ones((3, 2), np.float32), "b": np.full(2, -2.0, np.float32)}


# -- check_update ---------------------------------------------------------------------------


def test_good_update_passes(reference: Parameters) -> None:
    assert check_update(good_update(), reference) is None


def test_other_numeric_dtype_with_right_shape_passes(reference: Parameters) -> None:
    update = {"w": np.ones((3, 2), np.float64), "b": np.arange(2, dtype=np.int64)}
    assert check_update(update, reference) is None


@pytest.mark.parametrize("update", [None, [np.zeros(2)], (1, 2), "w", np.zeros(2)])
def test_non_mapping_is_refused_with_its_type(reference: Parameters, update: object) -> None:
    reason = check_update(update, reference)
    assert reason is not None
    assert "mapping" in reason
    assert type(update).__name__ in reason


def test_missing_name_is_listed(reference: Parameters) -> None:
    update = good_update()
    del update["b"]
    reason = check_update(update, reference)
    assert reason is not None
    assert "missing ['b']" in reason
    assert "unexpected []" in reason


def test_extra_name_is_listed(reference: Parameters) -> None:
    update = {**good_update(), "gamma": np.zeros(1, np.float32)}
    reason = check_update(update, reference)
    assert reason is not None
    assert "unexpected ['gamma']" in reason
    assert "missing []" in reason


def test_renamed_parameter_lists_both_sides(reference: Parameters) -> None:
    update = {"w": np.ones((3, 2), np.float32), "bias": np.zeros(2, np.float32)}
    reason = check_update(update, reference)
    assert reason is not None
    assert "missing ['b']" in reason
    assert "unexpected ['bias']" in reason


def test_wrong_shape_names_parameter_and_both_shapes(reference: Parameters) -> None:
    update = {**good_update(), "w": np.ones((2, 3), np.float32)}
    reason = check_update(update, reference)
    assert reason is not None
    assert "'w'" in reason
    assert "(2, 3)" in reason
    assert "(3, 2)" in reason


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_value_is_refused(reference: Parameters, bad: float) -> None:
    update = good_update()
    update["b"][1] = bad
    reason = check_update(update, reference)
    assert reason is not None
    assert "'b'" in reason
    assert "NaN or infinity" in reason


@pytest.mark.parametrize(
    "array",
    [np.array(["a", "b"]), np.array([None, None], dtype=object), np.array([True, False])],
)
def test_non_numeric_dtype_is_refused(reference: Parameters, array: np.ndarray) -> None:
    update = {**good_update(), "b": array}
    reason = check_update(update, reference)
    assert reason is not None
    assert "'b'" in reason
    assert "non-numeric" in reason
    assert str(array.dtype) in reason


def test_non_array_value_is_refused(reference: Parameters) -> None:
    update: dict[str, object] = {**good_update(), "b": [0.0, 1.0]}
    reason = check_update(update, reference)
    assert reason is not None
    assert "'b'" in reason
    assert "list" in reason
    assert "numpy array" in reason


# -- copy_parameters ------------------------------------------------------------------------


def test_copy_parameters_is_deep(reference: Parameters) -> None:
    original = good_update()
    copy = copy_parameters(original)
    assert copy.keys() == original.keys()
    copy["w"][0, 0] = 99.0
    assert original["w"][0, 0] == 1.0
    assert copy["b"].dtype == original["b"].dtype


# -- WeightedSum ----------------------------------------------------------------------------


def test_add_and_mean_match_hand_computation() -> None:
    a = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([[4.0]], np.float32)}
    b = {"w": np.array([3.0, 5.0], np.float32), "b": np.array([[-2.0]], np.float32)}
    total = WeightedSum()
    total.add(a, 2.0)
    total.add(b, 1.0)
    assert total.count == 2
    assert total.weight == 3.0
    # sums: w = 2*[1, 2] + 1*[3, 5] = [5, 9]; b = 2*4 + 1*(-2) = 6
    np.testing.assert_array_equal(total.sums["w"], [5.0, 9.0])
    np.testing.assert_array_equal(total.sums["b"], [[6.0]])
    assert total.sums["w"].dtype == np.float64
    mean = total.mean(a)
    np.testing.assert_allclose(mean["w"], [5.0 / 3.0, 3.0], rtol=1e-7)
    np.testing.assert_allclose(mean["b"], [[2.0]], rtol=1e-7)
    assert mean["w"].dtype == np.float32
    assert mean["b"].shape == (1, 1)


def test_sums_are_accumulated_in_float64() -> None:
    # 2**24 + 1 is not a float32, so a float32 accumulator would lose the 1.
    big = {"w": np.array([2.0**24], np.float32)}
    one = {"w": np.array([1.0], np.float32)}
    total = WeightedSum()
    total.add(big, 1.0)
    total.add(one, 1.0)
    assert total.sums["w"][0] == 2.0**24 + 1.0


def test_mean_casts_to_the_dtypes_of_like() -> None:
    total = WeightedSum()
    total.add({"w": np.array([1.0, 2.0])}, 1.0)
    mean = total.mean({"w": np.zeros(2, np.float16)})
    assert mean["w"].dtype == np.float16


def test_mean_of_empty_sum_is_an_error() -> None:
    with pytest.raises(ValueError, match="weight is 0"):
        WeightedSum().mean({"w": np.zeros(1)})


def test_merge_equals_adding_everything_into_one_sum() -> None:
    rng = np.random.default_rng(3)
    updates = [{"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)} for _ in range(5)]
    weights = [3.0, 1.0, 7.0, 2.0, 5.0]

    direct = WeightedSum()
    for update, weight in zip(updates, weights, strict=True):
        direct.add(update, weight)

    first, second = WeightedSum(), WeightedSum()
    for update, weight in zip(updates[:2], weights[:2], strict=True):
        first.add(update, weight)
    for update, weight in zip(updates[2:], weights[2:], strict=True):
        second.add(update, weight)
    merged = WeightedSum()
    merged.merge(first)
    merged.merge(second)

    assert merged.count == 5
    assert merged.weight == sum(weights)
    expected_w = sum(w * u["w"] for u, w in zip(updates, weights, strict=True))
    for name in ("w", "b"):
        np.testing.assert_allclose(merged.sums[name], direct.sums[name], rtol=1e-12)
    np.testing.assert_allclose(merged.sums["w"], expected_w, rtol=1e-12)
    mean = merged.mean(updates[0])
    np.testing.assert_allclose(mean["w"], expected_w / sum(weights), rtol=1e-12)


def test_merge_into_empty_sum_does_not_alias_the_other() -> None:
    other = WeightedSum()
    other.add({"w": np.array([1.0, 2.0])}, 2.0)
    merged = WeightedSum()
    merged.merge(other)
    np.testing.assert_array_equal(merged.sums["w"], [2.0, 4.0])
    other.add({"w": np.array([10.0, 10.0])}, 1.0)
    np.testing.assert_array_equal(merged.sums["w"], [2.0, 4.0])
    assert merged.count == 1
    assert merged.weight == 2.0


def test_merging_an_empty_sum_changes_nothing() -> None:
    total = WeightedSum()
    total.add({"w": np.array([1.0])}, 4.0)
    total.merge(WeightedSum())
    assert total.count == 1
    assert total.weight == 4.0
    np.testing.assert_array_equal(total.sums["w"], [4.0])


def test_same_grouping_and_order_give_identical_bits() -> None:
    def fold(seed: int) -> Parameters:
        rng = np.random.default_rng(seed)
        updates = [{"w": rng.normal(size=50).astype(np.float32)} for _ in range(9)]
        weights = [float(w) for w in rng.integers(1, 100, size=9)]
        groups = [range(0, 4), range(4, 7), range(7, 9)]
        total = WeightedSum()
        for group in groups:
            part = WeightedSum()
            for i in group:
                part.add(updates[i], weights[i])
            total.merge(part)
        return total.mean(updates[0])

    first, second = fold(11), fold(11)
    assert first["w"].tobytes() == second["w"].tobytes()
    assert fold(12)["w"].tobytes() != first["w"].tobytes()
