"""Flower's side of ``bench/vs_flower.py``: digits softmax FedAvg on ``run_simulation``.

Runs in its own virtual environment (``.bench/flower-venv`` with ``flwr[simulation]``,
which pins its own Ray); it never imports redfl. Same workload and math as redfl's
``DigitsClient`` (the "digits softmax" workload of docs/benchmarks.md): pixels / 16 tiled
4 times, shuffled with seed 0, N IID parts (a seeded permutation cut by ``array_split``),
softmax regression from zeros, 5 epochs of SGD, lr 0.1, batch 32, per-client generator
seeded by (seed, round, CRC-32 of ``client-i``), FedAvg weighted by examples, all clients
every round.

Prints one JSON line: ``train_seconds`` (from the server's first evaluation, after Ray has
started, to the last round's evaluation) and ``accuracy`` (final model on all the data).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import time
import zlib
from typing import Any

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.simulation import run_simulation
from sklearn.datasets import load_digits

SEED, LR, EPOCHS, BATCH = 0, 0.1, 5, 32


def digits() -> tuple[np.ndarray, np.ndarray]:
    """Pixels / 16 with a bias column, one-hot labels; tiled 4 times, shuffled (seed 0)."""
    bunch = load_digits()
    x = np.tile(np.asarray(bunch.data, np.float32) / np.float32(16.0), (4, 1))
    y = np.tile(np.asarray(bunch.target, np.int64), 4)
    order = np.random.default_rng(0).permutation(len(y))
    return x[order], y[order]


def parts(n: int, clients: int) -> list[np.ndarray]:
    perm = np.random.default_rng(0).permutation(n).astype(np.int64)
    return [np.sort(p) for p in np.array_split(perm, clients)]


def train(theta: np.ndarray, xa: np.ndarray, onehot: np.ndarray, rng: Any) -> np.ndarray:
    """Local SGD epochs on softmax regression (theta: weight rows, then the bias row)."""
    theta = theta.astype(np.float32, copy=True)
    n = len(xa)
    for _ in range(EPOCHS):
        order = rng.permutation(n)
        for lo in range(0, n, BATCH):
            idx = order[lo : lo + BATCH]
            xb, yb = (xa, onehot) if n <= BATCH else (xa[idx], onehot[idx])
            z = xb @ theta
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            z -= yb
            z *= np.float32(LR / len(xb))
            theta -= xb.T @ z
    return theta


def every_client_fedavg(clients: int, initial: list[np.ndarray], evaluate: Any) -> FedAvg:
    """Flower's FedAvg with every one of ``clients`` clients every round, no federated
    evaluation, ``evaluate`` on the server and the round number in the fit config."""
    return FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=clients,
        min_evaluate_clients=0,
        min_available_clients=clients,
        initial_parameters=ndarrays_to_parameters(initial),
        evaluate_fn=evaluate,
        on_fit_config_fn=lambda rnd: {"round": rnd},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    args = parser.parse_args()
    x, y = digits()
    xa_all = np.concatenate((x, np.ones((len(y), 1), np.float32)), axis=1)
    split = parts(len(y), args.clients)
    marks: dict[int, float] = {}
    accuracy: dict[int, float] = {}

    class Digits(NumPyClient):
        def __init__(self, index: int) -> None:
            self.index = index
            rows = split[index]
            self.xa, self.onehot = xa_all[rows], np.eye(10, dtype=np.float32)[y[rows]]

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            key = zlib.crc32(f"client-{self.index}".encode())
            rng = np.random.default_rng([SEED, int(config["round"]), key])
            theta = np.concatenate((parameters[0], parameters[1][None, :]))
            theta = train(theta, self.xa, self.onehot, rng)
            return [theta[:64], theta[64]], len(self.xa), {}

    def client_fn(context: Context) -> Any:
        return Digits(int(context.node_config["partition-id"])).to_client()

    def evaluate(rnd: int, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        marks[rnd] = time.perf_counter()
        if rnd < args.rounds:
            return None
        logits = x @ parameters[0] + parameters[1]
        accuracy[rnd] = float((logits.argmax(1) == y).mean())
        return 0.0, {"accuracy": accuracy[rnd]}

    def server_fn(context: Context) -> ServerAppComponents:
        zero = [np.zeros((64, 10), np.float32), np.zeros(10, np.float32)]
        strategy = every_client_fedavg(args.clients, zero, evaluate)
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))

    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=args.clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    train_seconds = marks[args.rounds] - marks[0]
    print(json.dumps({"train_seconds": train_seconds, "accuracy": accuracy[args.rounds]}))


if __name__ == "__main__":
    main()
