"""redfl's side of ``bench/vs_flower.py``: the digits softmax FedAvg workload, one process.

Prints one JSON line: ``train_seconds`` (``train``, which includes starting the workers;
starting Ray is excluded) and ``accuracy`` (final model on all the data). Ray is started
the way every federation starts it (:func:`redfl.runtime.connect.ensure_ray`: the embedded
instance, or the warm head when one runs), and stopped by redfl's exit handler.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import json
import time

import numpy as np

from redfl import FedAvg, StarFederation
from redfl.data.digits import load_digits_arrays
from redfl.examples.digits import DigitsClient, DigitsOptions

OPTIONS = DigitsOptions(partition="iid", tile=4, test_fraction=0.0, lr=0.1, epochs=5, batch_size=32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--runtime", choices=["ray", "local"], default="ray")
    args = parser.parse_args()
    if args.runtime == "ray":
        from redfl.runtime.connect import ensure_ray

        ensure_ray(None)
    fed = StarFederation(
        DigitsClient,
        args.clients,
        initial_parameters=DigitsClient.initial_parameters(OPTIONS),
        strategy=FedAvg(fraction_fit=1.0, min_fit_clients=args.clients),
        options=OPTIONS.model_dump(),
        runtime=args.runtime,
        seed=0,
    )
    with fed:
        start = time.perf_counter()
        result = fed.train(args.rounds)
        seconds = time.perf_counter() - start
    assert result.parameters is not None
    x, y = load_digits_arrays(tile=4, seed=0)
    logits = x @ result.parameters["weight"] + result.parameters["bias"]
    accuracy = float(np.mean(logits.argmax(1) == y))
    print(json.dumps({"train_seconds": seconds, "accuracy": accuracy}))


if __name__ == "__main__":
    main()
