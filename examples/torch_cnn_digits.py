"""A small PyTorch CNN on digits, FedAvg over 20 clients (needs ``pip install -e '.[torch]'``).

Run: ``.venv/bin/python examples/torch_cnn_digits.py``. Each Ray worker trains with one
torch thread, so workers x threads never exceed the cores.
"""

from __future__ import annotations

from redfl import Callback, FedAvg, StarFederation
from redfl.data.digits import load_digits_arrays
from redfl.examples.torch_digits import TorchDigitsClient, TorchDigitsOptions
from redfl.models.torch_cnn import DigitsCNN, TorchTrainer

OPTIONS = TorchDigitsOptions(partition="dirichlet", alpha=1.0, epochs=2, lr=0.1, threads=1)
X, Y = load_digits_arrays()


def central(parameters):
    """Loss and accuracy of the global CNN on all the digits."""
    loss, accuracy = TorchTrainer.evaluate(DigitsCNN(), parameters, X, Y)
    return loss, {"accuracy": accuracy}


class Printer(Callback):
    def on_round_end(self, record):
        print(f"round {record.round}: accuracy {record.accuracy:.3f} ({record.seconds:.2f} s)")


if __name__ == "__main__":
    federation = StarFederation(
        TorchDigitsClient,
        num_clients=20,
        initial_parameters=TorchTrainer.init_parameters(seed=0),
        options=OPTIONS.model_dump(),
        strategy=FedAvg(fraction_fit=0.5, min_fit_clients=5),
        evaluate_fn=central,
        callbacks=[Printer()],
        seed=0,
    )
    with federation:
        federation.train(rounds=20)
