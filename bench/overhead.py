"""Orchestration overhead: echo clients on redfl against a plain serial loop.

Workload "echo" (docs/benchmarks.md): 1,000 registered clients return the parameters
unchanged, 100 sampled per round, 20 rounds, FedAvg; with 10k and 1.6M float32 parameters.
The plain loop does the same weighted sums (float64, one client after another) in this
process. Prints the median round, the overhead per client update (median round / 100) and
the ratios. Targets: <= 0.1 ms per update at 10k parameters; at 1.6M, redfl's round <= the
plain loop's.

Run: ``OMP_NUM_THREADS=1 python bench/overhead.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import logging
import statistics
import time

import numpy as np
import ray
from common import machine

from redfl import FedAvg, StarFederation
from redfl.core.seeding import round_rng
from redfl.examples.echo import EchoClient


def plain_rounds(size: int, clients: int, sampled: int, rounds: int) -> list[float]:
    """Seconds per round of a serial loop: sample, sum weight x parameters, divide."""
    ids = [f"client-{i}" for i in range(clients)]
    strategy = FedAvg(fraction_fit=sampled / clients)
    w = np.zeros(size, np.float32)
    seconds = []
    for rnd in range(1, rounds + 1):
        start = time.perf_counter()
        chosen = strategy.configure_fit(rnd, ids, round_rng(0, rnd))
        total = np.zeros(size, np.float64)
        weight = 0.0
        for _ in chosen:
            update = w  # an echo client returns the parameters unchanged
            total += np.multiply(update, 1.0, dtype=np.float64)
            weight += 1.0
        w = (total / weight).astype(np.float32)
        seconds.append(time.perf_counter() - start)
    return seconds


def redfl_rounds(size: int, clients: int, sampled: int, rounds: int) -> list[float]:
    """Seconds per round of redfl on Ray (default workers: one per CPU)."""
    fed = StarFederation(
        EchoClient,
        clients,
        initial_parameters=EchoClient.initial_parameters(size),
        strategy=FedAvg(fraction_fit=sampled / clients),
    )
    with fed:
        history = fed.train(rounds).history
    return [r.seconds for r in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_600_000])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--sampled", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    print(machine())
    print(
        f"{'params':>10} {'plain ms/rnd':>12} {'redfl ms/rnd':>12} {'plain ms/upd':>12} "
        f"{'redfl ms/upd':>12} {'target':>16} {'ratio':>6} {'verdict':>7}"
    )
    for size in args.sizes:
        plain = statistics.median(plain_rounds(size, args.clients, args.sampled, args.rounds))
        ours = statistics.median(
            redfl_rounds(size, args.clients, args.sampled, args.rounds)[1:]  # round 1 builds
        )
        per_update = ours / args.sampled * 1e3
        if size <= 100_000:
            target, ratio, ok = "<= 0.1 ms/upd", per_update / 0.1, per_update <= 0.1
        else:
            target, ratio, ok = "<= plain round", ours / plain, ours <= plain
        print(
            f"{size:>10} {plain * 1e3:>12.2f} {ours * 1e3:>12.2f} "
            f"{plain / args.sampled * 1e3:>12.4f} {per_update:>12.4f} {target:>16} "
            f"{ratio:>6.2f} {'met' if ok else 'MISS':>7}"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
