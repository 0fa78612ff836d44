"""Tests for the numpy softmax-regression model."""

from __future__ import annotations

import dataclasses
import itertools
import pickle

import numpy as np
import pytest

from redfl.data import load_digits_arrays, train_test_split
from redfl.models import SoftmaxRegression

Params = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits_arrays()
    return train_test_split(x, y, test_fraction=0.2, seed=0)


def random_params(model: SoftmaxRegression, seed: int) -> Params:
    rng = np.random.default_rng(seed)
    return {
        "weight": rng.normal(size=(model.num_features, model.num_classes)).astype(np.float32),
        "bias": rng.normal(size=model.num_classes).astype(np.float32),
    }


def reference_sgd(
    params: Params,
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    epochs: int,
    batch_size: int,
    seed: int,
) -> tuple[Params, float]:
    """Float64 mini-batch SGD written from the textbook formulas, one sample at a time."""
    w = params["weight"].astype(np.float64)
    b = params["bias"].astype(np.float64)
    rng = np.random.default_rng(seed)
    n = len(y)
    total = 0.0
    for _ in range(epochs):
        perm = rng.permutation(n)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = perm[start : start + batch_size]
            grad_w = np.zeros_like(w)
            grad_b = np.zeros_like(b)
            for i in batch:
                logits = x[i].astype(np.float64) @ w + b
                p = np.exp(logits) / np.exp(logits).sum()
                total += -np.log(p[y[i]])
                err = p.copy()
                err[y[i]] -= 1.0
                grad_w += np.outer(x[i], err) / len(batch)
                grad_b += err / len(batch)
            w = w - lr * grad_w
            b = b - lr * grad_b
    return {"weight": w, "bias": b}, total / n


def test_init_parameters_shapes_and_dtypes() -> None:
    params = SoftmaxRegression(num_features=5, num_classes=3).init_parameters()
    assert set(params) == {"weight", "bias"}
    assert params["weight"].shape == (5, 3) and params["weight"].dtype == np.float32
    assert params["bias"].shape == (3,) and params["bias"].dtype == np.float32
    assert not params["weight"].any() and not params["bias"].any()


def test_one_sgd_step_matches_hand_computed_gradient() -> None:
    model = SoftmaxRegression(num_features=3, num_classes=2, lr=0.5, epochs=1, batch_size=2)
    w0 = np.array([[0.1, -0.2], [0.3, 0.0], [-0.5, 0.4]])
    b0 = np.array([0.05, -0.05])
    x = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    y = np.array([1, 0])
    # Explicit formulas: z = x W + b, p = e^z / sum e^z, g = (p - onehot) / 2.
    z = x @ w0 + b0
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    g = (p - np.array([[0.0, 1.0], [1.0, 0.0]])) / 2.0
    w1 = w0 - 0.5 * x.T @ g
    b1 = b0 - 0.5 * g.sum(axis=0)
    loss = -(np.log(p[0, 1]) + np.log(p[1, 0])) / 2.0
    params = {"weight": w0.astype(np.float32), "bias": b0.astype(np.float32)}
    new, fit_loss = model.fit(params, x.astype(np.float32), y, np.random.default_rng(0))
    np.testing.assert_allclose(new["weight"], w1, rtol=0, atol=1e-5)
    np.testing.assert_allclose(new["bias"], b1, rtol=0, atol=1e-5)
    assert fit_loss == pytest.approx(loss, abs=1e-5)
    assert new["weight"].dtype == np.float32 and new["bias"].dtype == np.float32


@pytest.mark.parametrize("batch_size", [1, 3, 4, 32])
def test_fit_matches_reference_minibatch_sgd(batch_size: int) -> None:
    model = SoftmaxRegression(
        num_features=6, num_classes=4, lr=0.3, epochs=3, batch_size=batch_size
    )
    rng = np.random.default_rng(42)
    x = rng.random((10, 6)).astype(np.float32)
    y = rng.integers(0, 4, size=10)
    params = random_params(model, seed=1)
    new, loss = model.fit(params, x, y, np.random.default_rng(7))
    ref, ref_loss = reference_sgd(params, x, y, 0.3, 3, batch_size, seed=7)
    np.testing.assert_allclose(new["weight"], ref["weight"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(new["bias"], ref["bias"], rtol=0, atol=1e-5)
    assert loss == pytest.approx(ref_loss, abs=1e-5)


def test_fit_does_not_mutate_inputs_and_returns_fresh_arrays() -> None:
    model = SoftmaxRegression(epochs=2, batch_size=4)
    params = random_params(model, seed=0)
    before = {k: v.copy() for k, v in params.items()}
    x, y = (np.array(a) for a in load_digits_arrays())
    x, y = x[:20], y[:20]
    x_before, y_before = x.copy(), y.copy()
    new, _ = model.fit(params, x, y, np.random.default_rng(0))
    for key in ("weight", "bias"):
        np.testing.assert_array_equal(params[key], before[key])
        assert not np.shares_memory(new[key], params[key])
        assert not np.array_equal(new[key], before[key])
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


def test_fit_is_deterministic_given_the_generator() -> None:
    model = SoftmaxRegression(batch_size=8)
    x, y = load_digits_arrays()
    a, loss_a = model.fit(model.init_parameters(), x[:50], y[:50], np.random.default_rng(3))
    b, loss_b = model.fit(model.init_parameters(), x[:50], y[:50], np.random.default_rng(3))
    c, _ = model.fit(model.init_parameters(), x[:50], y[:50], np.random.default_rng(4))
    np.testing.assert_array_equal(a["weight"], b["weight"])
    assert loss_a == loss_b
    assert not np.array_equal(a["weight"], c["weight"])


def test_tiny_client_fit_works() -> None:
    model = SoftmaxRegression()
    x, y = load_digits_arrays()
    new, loss = model.fit(model.init_parameters(), x[:7], y[:7], np.random.default_rng(0))
    # Full-batch gradient descent with a small step: the loss goes down every epoch, and the
    # reported loss (last epoch, before its update) lies between the start and the end.
    assert model.evaluate(new, x[:7], y[:7])[0] < loss < np.log(10)


def test_training_loss_decreases_over_fits(
    digits_split: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x_tr, y_tr, _, _ = digits_split
    model = SoftmaxRegression(epochs=1)
    params, rng = model.init_parameters(), np.random.default_rng(0)
    losses = []
    for _ in range(4):
        params, loss = model.fit(params, x_tr, y_tr, rng)
        losses.append(loss)
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    assert losses[0] < np.log(10)


def test_centralised_training_reaches_high_accuracy(
    digits_split: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x_tr, y_tr, x_te, y_te = digits_split
    model = SoftmaxRegression(lr=0.1, epochs=1)
    params, rng = model.init_parameters(), np.random.default_rng(0)
    for _ in range(20):
        params, _ = model.fit(params, x_tr, y_tr, rng)
    loss, accuracy = model.evaluate(params, x_te, y_te)
    assert accuracy > 0.9
    assert loss < 0.5


def test_evaluate_at_zero_parameters() -> None:
    model = SoftmaxRegression()
    x, y = load_digits_arrays()
    loss, accuracy = model.evaluate(model.init_parameters(), x, y)
    assert loss == pytest.approx(np.log(10), rel=1e-6)
    assert accuracy == pytest.approx(np.mean(y == 0))  # ties resolve to class 0


def test_evaluate_rejects_empty_input() -> None:
    model = SoftmaxRegression()
    with pytest.raises(ValueError, match="at least one sample"):
        model.evaluate(model.init_parameters(), np.empty((0, 64), np.float32), np.empty(0, int))


def test_fit_rejects_bad_data() -> None:
    model = SoftmaxRegression(num_features=4, num_classes=3)
    params, rng = model.init_parameters(), np.random.default_rng(0)
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="labels must be in"):
        model.fit(params, x, np.array([0, 3]), rng)
    with pytest.raises(ValueError, match="labels must be in"):
        model.fit(params, x, np.array([-1, 0]), rng)
    with pytest.raises(ValueError, match="x must have shape"):
        model.fit(params, np.zeros((2, 5), np.float32), np.array([0, 1]), rng)
    with pytest.raises(ValueError, match="y must have shape"):
        model.fit(params, x, np.array([0, 1, 2]), rng)
    with pytest.raises(ValueError, match="at least one sample"):
        model.fit(params, x[:0], np.array([], dtype=int), rng)
    with pytest.raises(ValueError, match="weight must have shape"):
        model.fit({"weight": np.zeros((3, 4)), "bias": params["bias"]}, x, np.array([0, 1]), rng)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_features", 0),
        ("num_classes", 0),
        ("lr", 0.0),
        ("lr", -0.1),
        ("lr", float("nan")),
        ("epochs", 0),
        ("batch_size", 0),
    ],
)
def test_rejects_bad_hyperparameters(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be"):
        SoftmaxRegression(**{field: value})  # type: ignore[arg-type]


def test_model_is_frozen_and_picklable() -> None:
    model = SoftmaxRegression(num_features=8, lr=0.05, batch_size=4)
    assert pickle.loads(pickle.dumps(model)) == model
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.lr = 1.0  # type: ignore[misc]
