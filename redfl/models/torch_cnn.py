"""A small CNN for 8x8 digits and its local training, with FedProx's proximal term.

Li et al., "Federated Optimization in Heterogeneous Networks" (FedProx), MLSys 2020: the
local loss adds ``mu / 2 * ||w - w_global||^2`` when the fit config holds ``proximal_mu``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from redfl.core.arrays import Parameters
from redfl.models.torch_adapter import load_arrays, to_arrays

__all__ = ["DigitsCNN", "TorchTrainer"]


class DigitsCNN(nn.Module):
    """conv(1->8) -> pool -> conv(8->16) -> linear(256->10), for 1x8x8 images."""

    input_shape: ClassVar[tuple[int, ...]] = (64,)
    """The shape of one example given to :meth:`predict`: an 8x8 image, flattened."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images of shape (n, 1, 8, 8)."""
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))  # type: ignore[no-any-return]

    def predict(self, parameters: Mapping[str, np.ndarray], inputs: np.ndarray) -> np.ndarray:
        """Class probabilities of ``parameters`` for ``inputs``, one row per example.

        ``inputs`` is (n, 64): each row an 8x8 image flattened, as the training data is.
        The parameters are loaded into this module first. Returns float32 (n, 10).

        Raises
        ------
        ValueError
            If ``inputs`` is not (n, 64).
        """
        x = np.require(inputs, np.float32, ["C", "W"])
        if x.ndim != 2 or x.shape[1:] != self.input_shape:
            raise ValueError(f"inputs must have shape (n, {self.input_shape[0]}), got {x.shape}")
        load_arrays(self, parameters)
        self.eval()
        with torch.no_grad():
            logits = self(torch.from_numpy(x).reshape(-1, 1, 8, 8))
            return torch.softmax(logits, dim=1).numpy()


@dataclass(frozen=True)
class TorchTrainer:
    """Mini-batch SGD of a :class:`DigitsCNN` from given parameters.

    Parameters
    ----------
    lr, epochs, batch_size:
        SGD learning rate (> 0), passes over the data (>= 1), batch size (>= 1).
    """

    lr: float = 0.05
    epochs: int = 1
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"need lr > 0, epochs >= 1, batch_size >= 1; got lr={self.lr}, "
                f"epochs={self.epochs}, batch_size={self.batch_size}"
            )

    @staticmethod
    def init_parameters(seed: int = 0) -> Parameters:
        """Torch's default initialisation under ``seed``, as independent arrays."""
        torch.manual_seed(seed)
        return to_arrays(DigitsCNN(), copy=True)

    def fit(
        self,
        model: DigitsCNN,
        parameters: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        rng: np.random.Generator,
        proximal_mu: float = 0.0,
    ) -> tuple[Parameters, float]:
        """Train ``model`` from ``parameters`` on (x, y); return (new arrays, mean loss).

        ``x`` is (n, 64) float32 in [0, 1], ``y`` (n,) int labels. The returned arrays are
        copies, so training this model again does not alter them.
        """
        load_arrays(model, parameters)
        model.train()
        anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu else []
        images = torch.from_numpy(np.require(x, np.float32, ["C", "W"])).reshape(-1, 1, 8, 8)
        labels = torch.from_numpy(np.require(y, np.int64, ["C", "W"]))
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr)
        total, seen = 0.0, 0
        for _ in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(labels)))
            for start in range(0, len(labels), self.batch_size):
                batch = order[start : start + self.batch_size]
                loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
                total += float(loss.detach()) * len(batch)
                seen += len(batch)
                if proximal_mu:
                    distance = sum(
                        ((p - a) ** 2).sum()
                        for p, a in zip(model.parameters(), anchor, strict=True)
                    )
                    loss = loss + proximal_mu / 2 * distance
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
        return to_arrays(model, copy=True), total / max(1, seen)

    @staticmethod
    def evaluate(
        model: DigitsCNN, parameters: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray
    ) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of ``parameters`` on (x, y)."""
        load_arrays(model, parameters)
        model.eval()
        with torch.no_grad():
            logits = model(
                torch.from_numpy(np.require(x, np.float32, ["C", "W"])).reshape(-1, 1, 8, 8)
            )
            labels = torch.from_numpy(np.require(y, np.int64, ["C", "W"]))
            loss = float(nn.functional.cross_entropy(logits, labels))
            accuracy = float((logits.argmax(1) == labels).float().mean())
        return loss, accuracy
