"""Broadcast: a 100 MB parameter set to 64 clients on 2 workers, against one client.

Each client reads the parameters (one value per page of every array) in an evaluation
round; the parameters are ``ray.put`` once and read in place from the object store.
Prints the median seconds of an evaluation round with 1 and with 64 clients, their ratio,
and the largest growth of the object store within one 64-client round (of /dev/shm, sampled
every 10 ms; one copy is about 100 MB). Target: <= 1.5 x the time
to one client; the store holds one copy (about 100 MB).

Run: ``OMP_NUM_THREADS=1 python bench/broadcast.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import logging
import shutil
import statistics
import threading
import time

import numpy as np
import ray
from common import machine

from redfl import ResourcesConfig, StarFederation
from redfl.examples.reader import ReaderClient


def store_used_mb() -> float:
    """Shared memory in use on this machine (Ray's object store lives in /dev/shm), in MB.

    Machine-wide: other Ray sessions running at the same time add to it.
    """
    return shutil.disk_usage("/dev/shm").used / 2**20


def evaluation_seconds(
    clients: int, parameters: dict[str, np.ndarray], repeats: int
) -> tuple[list[float], float]:
    """Seconds of each evaluation round, and the largest growth of the store in one round."""
    growth = [0.0]
    stop = threading.Event()
    before = [store_used_mb()]

    def watch() -> None:
        while not stop.wait(0.01):
            growth[0] = max(growth[0], store_used_mb() - before[0])

    fed = StarFederation(
        ReaderClient,
        clients,
        initial_parameters=parameters,
        resources=ResourcesConfig(num_workers=2),
    )
    seconds = []
    with fed:
        fed.evaluate()  # starts the workers and builds the clients
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for _ in range(repeats):
            before[0] = store_used_mb()
            start = time.perf_counter()
            fed.evaluate()
            seconds.append(time.perf_counter() - start)
        stop.set()
        watcher.join()
    return seconds, growth[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    print(machine())
    size = args.megabytes * 2**20 // 4
    parameters = {f"layer{i}": np.ones(size // 4, np.float32) for i in range(4)}
    seconds, _ = evaluation_seconds(1, parameters, args.repeats)
    one = statistics.median(seconds)
    seconds, growth = evaluation_seconds(args.clients, parameters, args.repeats)
    many = statistics.median(seconds)
    ratio = many / one
    print(
        f"{'MB':>5} {'1 client s':>10} {f'{args.clients} clients s':>13} {'ratio':>6} "
        f"{'target':>7} {'store +MB/round':>15} {'verdict':>7}"
    )
    print(
        f"{args.megabytes:>5} {one:>10.3f} {many:>13.3f} {ratio:>6.2f} {'<= 1.5':>7} "
        f"{growth:>15.0f} {'met' if ratio <= 1.5 else 'MISS':>7}"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
