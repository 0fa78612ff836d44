"""The README's tour: a star federation of digits clients, trained with FedAvg on Ray."""

from __future__ import annotations

import numpy as np

from redfl import (
    Callback,
    Client,
    EvaluateResult,
    FedAvg,
    FitResult,
    Parameters,
    RoundRecord,
    StarFederation,
)
from redfl.core.instructions import Instructions
from redfl.data import DirichletPartitioner, load_digits_arrays
from redfl.models import SoftmaxRegression

MODEL = SoftmaxRegression(lr=0.3, epochs=5, batch_size=8)


class DigitsClient(Client):
    """Each client trains on its own label-skewed slice of the digits data."""

    def setup(self) -> None:  # runs where the client lives, on first use
        x, y = load_digits_arrays()
        parts = DirichletPartitioner(alpha=0.5, min_size=5).partition(y, self.context.num_nodes)
        mine = parts[self.context.index]
        self.x, self.y = x[mine], y[mine]

    def fit(self, parameters: Parameters, config: Instructions) -> FitResult:
        new, loss = MODEL.fit(parameters, self.x, self.y, self.rng(config))
        return FitResult(new, num_examples=len(self.y), metrics={"loss": loss})

    def evaluate(self, parameters: Parameters, config: Instructions) -> EvaluateResult:
        loss, accuracy = MODEL.evaluate(parameters, self.x, self.y)
        return EvaluateResult(loss, num_examples=len(self.y), metrics={"accuracy": accuracy})


class Printer(Callback):
    def on_round_end(self, record: RoundRecord) -> None:
        print(f"round {record.round}: accuracy {record.accuracy:.3f} ({record.seconds:.2f} s)")


if __name__ == "__main__":
    federation = StarFederation(
        DigitsClient,
        num_clients=50,
        initial_parameters=MODEL.init_parameters(),
        strategy=FedAvg(fraction_fit=0.5, min_fit_clients=10, fraction_evaluate=0.2),
        callbacks=[Printer()],
        seed=0,  # runtime="local" runs the same federation in-process
    )
    with federation:
        result = federation.train(rounds=10)
    assert result.parameters is not None
    print(
        "failures:",
        len(result.failures),
        "| weight norm:",
        np.linalg.norm(result.parameters["weight"]),
    )
