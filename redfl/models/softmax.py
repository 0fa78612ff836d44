"""Multinomial logistic (softmax) regression trained with mini-batch SGD in float32 numpy.

The model is tiny and stateless: parameters travel as a ``{"weight", "bias"}`` dict of float32
arrays, and :meth:`SoftmaxRegression.fit` is cheap for clients with a handful of samples
(buffers allocated once per call, no Python loop over samples).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Prepared", "SoftmaxRegression"]


@dataclass(frozen=True)
class Prepared:
    """Training data laid out for SGD: features with a bias column, one-hot labels."""

    xa: np.ndarray
    onehot: np.ndarray

    def __len__(self) -> int:
        return int(self.xa.shape[0])


@dataclass(frozen=True)
class SoftmaxRegression:
    """Softmax regression ``p(y | x) = softmax(x @ weight + bias)`` with SGD training.

    Parameters
    ----------
    num_features : int, default 64
        Input dimension, >= 1.
    num_classes : int, default 10
        Number of classes, >= 1. Labels must lie in ``0 .. num_classes - 1``.
    lr : float, default 0.1
        SGD learning rate, > 0.
    epochs : int, default 5
        Passes over the local data per :meth:`fit` call, >= 1.
    batch_size : int, default 32
        Mini-batch size, >= 1; the last batch of an epoch may be smaller.
    """

    num_features: int = 64
    num_classes: int = 10
    lr: float = 0.1
    epochs: int = 5
    batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("num_features", "num_classes", "epochs", "batch_size"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be > 0 and finite, got {self.lr}")

    def init_parameters(self) -> dict[str, np.ndarray]:
        """Return float32 zeros: ``weight`` (num_features, num_classes), ``bias`` (num_classes,)."""
        return {
            "weight": np.zeros((self.num_features, self.num_classes), dtype=np.float32),
            "bias": np.zeros(self.num_classes, dtype=np.float32),
        }

    def fit(
        self,
        parameters: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        rng: np.random.Generator,
        proximal_mu: float = 0.0,
    ) -> tuple[dict[str, np.ndarray], float]:
        """Run ``epochs`` epochs of mini-batch SGD starting from ``parameters``.

        Parameters
        ----------
        parameters : Mapping[str, np.ndarray]
            Starting ``weight`` and ``bias``; copied, never modified.
        x : np.ndarray
            Features, shape ``(n, num_features)``, n >= 1; converted to float32.
        y : np.ndarray
            Integer labels, shape ``(n,)``, in ``0 .. num_classes - 1``.
        rng : np.random.Generator
            Source of the per-epoch ``rng.permutation(n)`` shuffles.
        proximal_mu : float, default 0
            FedProx's coefficient: each step also descends ``mu / 2 * ||theta - theta_0||^2``,
            ``theta_0`` the starting parameters (Li et al., MLSys 2020).

        Returns
        -------
        parameters : dict[str, np.ndarray]
            New float32 ``weight`` and ``bias``.
        loss : float
            Mean cross-entropy over the last epoch's batches, each batch's loss computed before
            its update and weighted by batch size.

        Raises
        ------
        ValueError
            If shapes disagree, ``x`` is empty, or a label is out of range.

        Notes
        -----
        Per batch: ``g = (softmax(xb @ W + b) - onehot(yb)) / len(batch)``, ``W -= lr * xb.T @ g``,
        ``b -= lr * g.sum(0)``, with the bias folded into ``W`` by a column of ones in ``x``. When
        one batch covers all samples, the permutation is drawn but not applied (it cannot change
        the gradient).
        """
        return self.fit_prepared(parameters, self.prepare(x, y), rng, proximal_mu)

    def prepare(self, x: np.ndarray, y: np.ndarray) -> Prepared:
        """Validate ``(x, y)`` once and lay it out for :meth:`fit_prepared`.

        A client that trains every round prepares its data in ``setup()`` and skips this
        work (a bias column and one-hot labels) on every call.
        """
        x, y = self._check_data(x, y)
        xa = np.concatenate((x, np.ones((x.shape[0], 1), dtype=np.float32)), axis=1)
        onehot = np.eye(self.num_classes, dtype=np.float32)[y]
        return Prepared(xa, onehot)

    def fit_prepared(
        self,
        parameters: Mapping[str, np.ndarray],
        data: Prepared,
        rng: np.random.Generator,
        proximal_mu: float = 0.0,
        label_flip: bool = False,
    ) -> tuple[dict[str, np.ndarray], float]:
        """:meth:`fit` on data laid out by :meth:`prepare`.

        ``label_flip`` trains on labels ``num_classes - 1 - y`` (attack simulation).
        """
        if not 0 <= proximal_mu < math.inf:
            raise ValueError(f"proximal_mu must be >= 0 and finite, got {proximal_mu}")
        weight, bias = self._view_parameters(parameters)
        xa, onehot = data.xa, data.onehot
        if label_flip:
            onehot = np.ascontiguousarray(onehot[:, ::-1])
        n, f, c = xa.shape[0], self.num_features, self.num_classes
        theta = np.concatenate((weight, bias[None, :]))
        theta0 = theta.copy() if proximal_mu > 0 else None
        prox = np.float32(self.lr * proximal_mu)
        grad = np.empty_like(theta)
        bs = min(self.batch_size, n)
        # Work buffers, allocated once per call; views for a full batch and the short last one.
        zbuf = np.empty((bs, c), dtype=np.float32)
        rbuf = np.empty(bs, dtype=np.float32)
        single = bs == n
        xbuf = xa if single else np.empty((bs, f + 1), dtype=np.float32)
        ybuf = onehot if single else np.empty((bs, c), dtype=np.float32)
        views = {
            m: (xbuf[:m], ybuf[:m], zbuf[:m], rbuf[:m], rbuf[:m, None], np.float32(self.lr / m))
            for m in {bs, n % bs or bs}
        }
        loss_sum = 0.0
        for epoch in range(self.epochs):
            last = epoch == self.epochs - 1
            perm = rng.permutation(n)
            for start in range(0, n, bs):
                idx = perm[start : start + bs]
                xb, yb, z, row, row2d, step = views[idx.shape[0]]
                if not single:  # with a single batch its order does not change the gradient
                    np.take(xa, idx, axis=0, out=xb, mode="clip")  # idx are valid: no checks
                    np.take(onehot, idx, axis=0, out=yb, mode="clip")
                np.matmul(xb, theta, out=z)
                np.maximum.reduce(z, axis=1, out=row)
                np.subtract(z, row2d, out=z)  # shift by the row max for a stable softmax
                if last:  # cross-entropy = log(sum(exp(shifted))) - shifted true logit
                    loss_sum -= float(np.vdot(z, yb))
                np.exp(z, out=z)
                np.add.reduce(z, axis=1, out=row)
                if last:
                    loss_sum += float(np.add.reduce(np.log(row)))
                np.divide(z, row2d, out=z)  # softmax probabilities p
                np.subtract(z, yb, out=z)  # d(summed loss)/d(logits) = p - onehot
                np.multiply(z, step, out=z)  # lr / batch size
                np.matmul(xb.T, z, out=grad)
                if theta0 is not None:  # FedProx: + lr * mu * (theta - theta_0)
                    grad += prox * (theta - theta0)
                np.subtract(theta, grad, out=theta)
        return {"weight": theta[:f], "bias": theta[f]}, loss_sum / n

    def evaluate(
        self, parameters: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray
    ) -> tuple[float, float]:
        """Compute mean cross-entropy loss and accuracy on ``(x, y)``.

        Parameters
        ----------
        parameters, x, y : Mapping[str, np.ndarray], np.ndarray, np.ndarray
            As for :meth:`fit` (nothing is modified); ``x`` needs at least one sample.

        Returns
        -------
        tuple[float, float]
            Mean cross-entropy loss, and accuracy (fraction of arg-max predictions equal to y).

        Raises
        ------
        ValueError
            If ``x`` is empty, shapes disagree, or a label is out of range.
        """
        weight, bias = self._view_parameters(parameters)
        x, y = self._check_data(x, y)
        z = x @ weight + bias
        correct = np.argmax(z, axis=1) == y
        z -= z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1, dtype=np.float64))
        loss = float(np.mean(log_norm - z[np.arange(len(y)), y]))
        return loss, float(np.mean(correct))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example: ``(num_features,)``."""
        return (self.num_features,)

    def predict(self, parameters: Mapping[str, np.ndarray], inputs: np.ndarray) -> np.ndarray:
        """Class probabilities ``softmax(inputs @ weight + bias)``, one row per example.

        Parameters
        ----------
        parameters : Mapping[str, np.ndarray]
            ``weight`` and ``bias`` as for :meth:`fit` (nothing is modified).
        inputs : np.ndarray
            Features, shape ``(n, num_features)``; converted to float32.

        Returns
        -------
        np.ndarray
            float32 ``(n, num_classes)``; each row sums to 1.

        Raises
        ------
        ValueError
            If ``inputs`` or the parameters have the wrong shape.
        """
        weight, bias = self._view_parameters(parameters)
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"inputs must have shape (n, {self.num_features}), got {x.shape}")
        z: np.ndarray = x @ weight + bias
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def _view_parameters(self, parameters: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """Return ``(weight, bias)`` as float32 arrays (no copy if already float32)."""
        weight = np.asarray(parameters["weight"], dtype=np.float32)
        bias = np.asarray(parameters["bias"], dtype=np.float32)
        if weight.shape != (self.num_features, self.num_classes):
            expected = (self.num_features, self.num_classes)
            raise ValueError(f"weight must have shape {expected}, got {weight.shape}")
        if bias.shape != (self.num_classes,):
            raise ValueError(f"bias must have shape {(self.num_classes,)}, got {bias.shape}")
        return weight, bias

    def _check_data(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validate and convert ``x`` to float32 and ``y`` to intp (no copy when possible)."""
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"x must have shape (n, {self.num_features}), got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError("x must contain at least one sample, got 0")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(
                f"labels must be in [0, {self.num_classes - 1}], got range [{y.min()}, {y.max()}]"
            )
        return x, y


class SgdOptions(BaseModel):
    """The local training of a client's :class:`SoftmaxRegression` (part of its options),
    and the seed of its data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_seed: int = Field(default=0, ge=0)
    lr: float = Field(default=0.1, gt=0.0, le=10.0)
    epochs: int = Field(default=5, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=100_000)

    def model(self) -> SoftmaxRegression:
        """The softmax-regression model these options describe."""
        return SoftmaxRegression(lr=self.lr, epochs=self.epochs, batch_size=self.batch_size)
