"""Lazy virtual nodes: creation cost, and memory that follows workers, not nodes.

Workload "population" (docs/benchmarks.md): N registered echo clients (N up to 100,000),
100 sampled per round. Prints, per N: seconds to create the federation (no process
starts), seconds of the first round (starts the workers), steady seconds per round, and the
peak RSS of the workers. "1st train" is a first ``train(1)``: start the workers, build the
sampled clients, run the round. Target: creation of 100,000 nodes under 1 s; worker memory about
flat in N.

Run: ``make bench`` (or ``python bench/lazy_nodes.py``).
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

from redfl import FedAvg, StarFederation
from redfl.examples.echo import EchoClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sampled", type=int, default=100)
    args = parser.parse_args()
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    print(
        f"{'clients':>8} {'create s':>9} {'started?':>8} {'1st train s':>11} "
        f"{'steady s/rnd':>12} {'workers':>7} {'worker peak RSS MB':>18} {'verdict':>7}"
    )
    for clients in args.clients:
        start = time.perf_counter()
        fed = StarFederation(
            EchoClient,
            clients,
            initial_parameters=EchoClient.initial_parameters(),
            strategy=FedAvg(fraction_fit=args.sampled / clients, min_fit_clients=1),
        )
        create = time.perf_counter() - start
        started = fed.started
        try:
            start = time.perf_counter()
            fed.train(1)
            first = time.perf_counter() - start
            history = fed.train(args.rounds).history
            stats = fed.worker_stats()
        finally:
            fed.stop()
        steady = statistics.mean(r.seconds for r in history[1:])
        rss = " / ".join(f"{s['peak_rss_mb']:.0f}" for s in stats)
        ok = create < 1.0 and not started
        print(
            f"{clients:>8} {create:>9.3f} {started!s:>8} {first:>11.3f} "
            f"{steady:>12.4f} {len(stats):>7} {rss:>18} {'PASS' if ok else 'MISS':>7}"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
