"""Flower's side of ``bench/secagg.py``: FedAvg rounds with or without ``SecAggPlusWorkflow``.

Runs in Flower's virtual environment (``.bench/flower-venv``, made by
``python bench/vs_flower.py --setup``); it never imports redfl. Each of ``--clients``
clients returns the global parameters (``--size`` float32 entries) plus Gaussian noise of
std 0.01 and 1-49 examples, drawn exactly as redfl's ``JitterClient`` draws them for
``client-<partition id>`` with seed 0 (echo-like: the protocol's cost is what is measured,
and both sides' clients send the same updates, so their results can be compared). With
``--secure``, the fit goes through ``SecAggPlusWorkflow`` (``num_shares = neighbours +
1``, ``reconstruction_threshold`` given, Flower's default quantisation) and the clients
through ``secaggplus_mod``.

Prints one JSON line: ``round_seconds`` (the time between consecutive server-side
evaluations, one per round, the first round left out when there are more) and
``parameters`` (where the final parameters were saved, ``.npy``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import statistics
import time
import zlib
from typing import Any

import numpy as np
from flower_side import every_client_fedavg
from flwr.app import Context
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.simulation import run_simulation


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--secure", action="store_true")
    parser.add_argument("--neighbours", type=int, default=0)
    parser.add_argument("--threshold", type=int, default=0)
    parser.add_argument("--out", required=True, help="where to save the final parameters")
    args = parser.parse_args()
    marks: dict[int, float] = {}
    final: dict[str, np.ndarray] = {}

    class Jitter(NumPyClient):
        def __init__(self, index: int) -> None:
            self.index = index

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            key = zlib.crc32(f"client-{self.index}".encode())
            rng = np.random.default_rng([0, int(config["round"]), key])
            new = (parameters[0] + rng.normal(0.0, 0.01, parameters[0].shape)).astype(np.float32)
            return [new], int(rng.integers(1, 50)), {}

    def client_fn(context: Context) -> Any:
        return Jitter(int(context.node_config["partition-id"])).to_client()

    def evaluate(rnd: int, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        marks[rnd] = time.perf_counter()
        final["w"] = np.array(parameters[0])
        return None

    strategy = every_client_fedavg(args.clients, [np.zeros(args.size, np.float32)], evaluate)
    server = ServerApp()

    @server.main()
    def run(grid: Grid, context: Context) -> None:
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=args.rounds), strategy=strategy
        )
        if args.secure:
            fit = SecAggPlusWorkflow(
                num_shares=args.neighbours + 1, reconstruction_threshold=args.threshold
            )
            DefaultWorkflow(fit_workflow=fit)(grid, legacy)
        else:
            DefaultWorkflow()(grid, legacy)

    mods: list[Any] = [secaggplus_mod] if args.secure else []
    run_simulation(
        server_app=server,
        client_app=ClientApp(client_fn=client_fn, mods=mods),
        num_supernodes=args.clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    rounds = [marks[r] - marks[r - 1] for r in range(1, args.rounds + 1)]
    np.save(args.out, final["w"])
    steady = rounds[1:] if len(rounds) > 1 else rounds
    print(json.dumps({"round_seconds": statistics.median(steady), "parameters": args.out}))


if __name__ == "__main__":
    main()
