"""The digits task with a small PyTorch CNN client (needs the ``torch`` extra).

Data comes from :mod:`redfl.examples.digits` (loaded where the client runs); parameters
travel as named numpy arrays through :mod:`redfl.models.torch_adapter`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.examples.digits import DigitsOptions, client_data
from redfl.models.torch_cnn import DigitsCNN, TorchTrainer
from redfl.nodes.client import Client


class TorchDigitsOptions(DigitsOptions):
    """Digits options plus the CNN's training settings and torch threads per process."""

    lr: float = Field(default=0.05, gt=0.0, le=10.0)
    epochs: int = Field(default=1, ge=1, le=1000)
    threads: int = Field(default=1, ge=1, le=256)

    def trainer(self) -> TorchTrainer:
        """The trainer these options describe."""
        return TorchTrainer(lr=self.lr, epochs=self.epochs, batch_size=self.batch_size)


class TorchDigitsClient(Client):
    """A client training :class:`~redfl.models.torch_cnn.DigitsCNN` on its digits part.

    Honours the typed instruction ``proximal_mu`` (FedProx).
    """

    Options = TorchDigitsOptions

    def __init__(self, **options: Any) -> None:
        self.options = TorchDigitsOptions(**options)
        self.trainer = self.options.trainer()
        self.model = DigitsCNN()
        self.x = np.empty((0, 64), np.float32)
        self.y = np.empty(0, np.int64)

    def setup(self) -> None:
        """Set torch's threads for this process and load this client's part of the data."""
        torch.set_num_threads(self.options.threads)
        self.x, self.y = client_data(self.options, self.context.index, self.context.num_nodes)

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Local SGD epochs from the global parameters (plus FedProx's term if asked)."""
        mu = float(Instructions.of(config).proximal_mu or 0.0)
        new, loss = self.trainer.fit(self.model, parameters, self.x, self.y, self.rng(config), mu)
        return new, len(self.y), {"loss": loss}

    def evaluate(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[float, int, dict[str, float]]:
        """Loss and accuracy on this client's examples."""
        loss, accuracy = TorchTrainer.evaluate(self.model, parameters, self.x, self.y)
        return loss, len(self.y), {"accuracy": accuracy}

    @staticmethod
    def initial_parameters(options: TorchDigitsOptions) -> Parameters:
        """Torch's default initialisation of the CNN, seeded by ``options.data_seed`` (so a
        config can run it: ``client.target = "redfl.examples.torch_digits:TorchDigitsClient"``).
        """
        return TorchTrainer.init_parameters(seed=options.data_seed)
