"""Population scale: 1e3 to 1e5 registered digits clients, 100 sampled per round.

Clients are digits softmax learners whose Dirichlet(0.5) data is generated lazily per
client (:mod:`redfl.examples.lazy_digits`). Prints, for each N: seconds to create the
federation, the median seconds per round (rounds 2..R) and the peak resident memory of the
driver plus all Ray worker processes (sampled every 50 ms). This VM's speed drifts by tens
of percent between runs, so the sizes are run in interleaved passes (``--repeats``) and each
keeps its best median round, its fastest creation and its highest memory peak. Targets:
round time at 1e5 within 10 % of 1e3; peak memory under 2 GB at 1e5, growing by less than
200 MB from 1e3.

Run: ``OMP_NUM_THREADS=1 python bench/population.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import logging
import statistics
import time

import ray
from common import PeakMemory, machine

from redfl import FedAvg, StarFederation
from redfl.examples.lazy_digits import LazyDigitsClient
from redfl.models.softmax import SoftmaxRegression


def measure(clients: int, rounds: int, sampled: int) -> tuple[float, float, float]:
    """One federation of ``clients``: (create s, median s/round over rounds 2.., peak MB)."""
    with PeakMemory() as memory:
        start = time.perf_counter()
        fed = StarFederation(
            LazyDigitsClient,
            clients,
            initial_parameters=SoftmaxRegression().init_parameters(),
            strategy=FedAvg(fraction_fit=sampled / clients, min_fit_clients=1),
        )
        create = time.perf_counter() - start
        with fed:
            history = fed.train(rounds).history
    return create, statistics.median(r.seconds for r in history[1:]), memory.peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sampled", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    print(machine())
    runs: dict[int, list[tuple[float, float, float]]] = {n: [] for n in args.clients}
    for _ in range(args.repeats):
        for clients in args.clients:
            runs[clients].append(measure(clients, args.rounds, args.sampled))
    rows = [
        (n, min(r[0] for r in got), min(r[1] for r in got), max(r[2] for r in got))
        for n, got in runs.items()
    ]
    base_round, base_memory = rows[0][2], rows[0][3]
    print(
        f"{'clients':>8} {'create s':>9} {'s/round':>8} {'x 1e3 round':>11} "
        f"{'peak MB':>8} {'+MB vs 1e3':>10} {'verdict':>30}"
    )
    for clients, create, per_round, peak in rows:
        ratio, growth = per_round / base_round, peak - base_memory
        verdict = "reference"
        if clients != rows[0][0]:
            checks = [
                f"round {'met' if ratio <= 1.10 else 'MISS'}",
                f"mem {'met' if peak < 2048 else 'MISS'}",
                f"growth {'met' if growth < 200 else 'MISS'}",
            ]
            verdict = ", ".join(checks)
        print(
            f"{clients:>8} {create:>9.3f} {per_round:>8.4f} {ratio:>11.2f} "
            f"{peak:>8.0f} {growth:>10.0f} {verdict:>30}"
        )
    print("targets: round <= 1.10 x the 1e3 round; peak < 2048 MB; growth from 1e3 < 200 MB")
    ray.shutdown()


if __name__ == "__main__":
    main()
