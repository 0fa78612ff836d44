"""Compute-heavy scaling: a small torch CNN on digits, redfl on 2 workers vs a serial loop.

100 clients (IID parts of the digits tiled 4 times), all training each round, 5 rounds,
2 local epochs of SGD (lr 0.05, batch 16), FedAvg. One torch thread per process on both
sides (2 workers x 1 thread <= 2 cores). The plain loop runs the same clients' training
(same code, same seeds) one after another in this process. Data loading and worker start
are outside both timings. Target: redfl >= 1.7 x faster; final models equal within 1e-4.

Run: ``OMP_NUM_THREADS=1 python bench/torch_scaling.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import logging
import time

import numpy as np
import ray
import torch
from common import machine

from redfl import FedAvg, ResourcesConfig, StarFederation
from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.seeding import client_rng
from redfl.examples.digits import client_data
from redfl.examples.torch_digits import TorchDigitsClient, TorchDigitsOptions
from redfl.models.torch_cnn import DigitsCNN, TorchTrainer

OPTIONS = TorchDigitsOptions(
    partition="iid", tile=4, test_fraction=0.0, lr=0.05, epochs=2, batch_size=16, threads=1
)


def plain_loop(clients: int, rounds: int, start: Parameters) -> tuple[Parameters, list[float]]:
    """Serial FedAvg with the same trainer and per-client seeds; seconds of each round."""
    torch.set_num_threads(1)
    data = [client_data(OPTIONS, i, clients) for i in range(clients)]
    trainer, model = OPTIONS.trainer(), DigitsCNN()
    parameters = start
    seconds = []
    for rnd in range(1, rounds + 1):
        began = time.perf_counter()
        total = WeightedSum()
        for i, (x, y) in enumerate(data):
            rng = client_rng(0, rnd, f"client-{i}")
            new, _ = trainer.fit(model, parameters, x, y, rng)
            total.add(new, float(len(y)))
        parameters = total.mean(parameters)
        seconds.append(time.perf_counter() - began)
    return parameters, seconds


def redfl_run(clients: int, rounds: int, start: Parameters) -> tuple[Parameters, list[float]]:
    """The same on redfl, 2 workers of 1 CPU; seconds of each round's ``train``."""
    fed = StarFederation(
        TorchDigitsClient,
        clients,
        initial_parameters=start,
        options=OPTIONS.model_dump(),
        strategy=FedAvg(),
        resources=ResourcesConfig(num_workers=2),
    )
    with fed:
        fed.evaluate()  # starts the workers, builds the clients, loads their data
        seconds = []
        for _ in range(rounds):
            began = time.perf_counter()
            result = fed.train(1)
            seconds.append(time.perf_counter() - began)
    assert result.parameters is not None
    return result.parameters, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    print(machine() + ", torch threads per process 1")
    start = TorchTrainer.init_parameters(seed=0)
    plain, plain_rounds = plain_loop(args.clients, args.rounds, start)
    ours, our_rounds = redfl_run(args.clients, args.rounds, start)
    diff = max(float(np.abs(plain[k] - ours[k]).max()) for k in plain)
    plain_s, ours_s = sum(plain_rounds), sum(our_rounds)
    speedup = plain_s / ours_s
    # The first round pays each process's first torch backward pass (lazy autograd and
    # allocator set-up): the plain loop pays it once, redfl once per worker.
    steady = float(np.median(plain_rounds[1:]) / np.median(our_rounds[1:]))
    print(
        f"{'clients x rounds':>16} {'plain s':>8} {'redfl s':>8} {'speed-up':>8} "
        f"{'rounds 2+ speed-up':>18} {'target':>7} {'max abs diff':>12} {'verdict':>7}"
    )
    ok = speedup >= 1.7 and diff <= 1e-4
    print(
        f"{f'{args.clients} x {args.rounds}':>16} {plain_s:>8.2f} {ours_s:>8.2f} "
        f"{speedup:>8.2f} {steady:>18.2f} {'>= 1.7':>7} {diff:>12.2e} "
        f"{'met' if ok else 'MISS':>7}"
    )
    print("first round s: plain", f"{plain_rounds[0]:.2f}", "redfl", f"{our_rounds[0]:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
