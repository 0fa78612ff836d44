"""Hierarchy against the flat star: 10,000 clients on the same 2 workers.

Workloads: echo clients (650 float32 parameters returned unchanged: orchestration only),
then digits softmax clients (``LazyDigitsClient``: 20 examples each, 64x10 + 10 weights,
5 local epochs of SGD, lr 0.1, batch 32). FedAvg, all clients every round, seed 0.

The tree: depth 2, width 4, 4 LCPs per leaf relay (64 LCPs, 20 aggregators), the clients
spread evenly over the LCPs (156 or 157 each). Each top-tier subtree lives on one worker
(2 per worker), so 4 partial sums reach the root per round.

For each workload, the flat star and the hierarchy each start their own 2 workers (half a
CPU each, so both fit on the 2 CPUs; they never run at once), run a first round (which
builds the clients), then ``--rounds`` rounds each, alternating flat and hierarchy round by
round so that the drifting speed of this shared 2-core VM hits both alike; the median round
of each side is printed. Also printed: the bytes of model sums the root (driver) receives
per round (measured for the hierarchy; for the star, one float64 sum per worker), what a
star without pre-aggregation would receive, the peak RSS of each side's workers, the peak
RSS of the driver and all workers together, and the largest difference between the two
final models. Targets: hierarchy <= 1.1 x flat per
round, root bytes proportional to the root's children (not to the clients), gap <= 1e-6.

Run: ``python bench/hierarchy.py [--clients 10000] [--rounds 8]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: single-threaded BLAS
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import logging
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil
import ray
from common import PeakMemory, machine

from redfl import FedAvg, HierarchicalFederation, ResourcesConfig, StarFederation
from redfl.core.arrays import Parameters
from redfl.examples.echo import EchoClient
from redfl.examples.lazy_digits import LazyDigitsClient, LazyDigitsOptions
from redfl.models import SoftmaxRegression
from redfl.topology import relay_tree

WORKERS = 2
TREE = relay_tree(2, 4, 4)


class OwnPeakMemory(PeakMemory):
    """:class:`PeakMemory` over this driver and its own Ray workers only (the machine is
    shared: other sessions' ``ray::`` processes are not counted)."""

    def sample(self) -> float:
        """The summed RSS of this driver and its descendant ``ray::`` processes, in MB."""
        me = psutil.Process()
        total = float(me.memory_info().rss)
        for process in me.children(recursive=True):
            try:
                if process.cmdline()[:1] and process.cmdline()[0].startswith("ray::"):
                    total += float(process.memory_info().rss)
            except psutil.Error:
                continue
        self.peak_mb = max(self.peak_mb, total / 2**20)
        return total / 2**20


def make(kind: str, client: Any, options: dict[str, Any], n: int, init: Parameters) -> Any:
    """The flat star or the hierarchy over the same ``n`` clients and seed, on 2 workers."""
    common: dict[str, Any] = {
        "initial_parameters": init,
        "strategy": FedAvg(fraction_fit=1.0, min_fit_clients=1, fraction_evaluate=0.0),
        "options": options,
        "seed": 0,
        "resources": ResourcesConfig(num_workers=WORKERS, worker={"CPU": 0.5}),
    }
    if kind == "flat":
        return StarFederation(client, n, **common)
    return HierarchicalFederation(client, n, tree=TREE, min_coverage=1.0, **common)


def workload(name: str, make_side: Callable[[str], Any], args: argparse.Namespace) -> None:
    """Both sides alive, their rounds alternating; print one table row per side."""
    sides = {kind: make_side(kind) for kind in ("flat", "hier")}
    seconds: dict[str, list[float]] = {kind: [] for kind in sides}
    results: dict[str, Any] = {}
    with OwnPeakMemory() as memory, sides["flat"], sides["hier"]:
        for fed in sides.values():
            fed.train(1)  # starts the workers and builds the clients
        for _ in range(args.rounds):
            for kind, fed in sides.items():
                results[kind] = fed.train(1)
                seconds[kind].append(results[kind].history[-1].seconds)
        workers_mb = {k: sum(s["peak_rss_mb"] for s in f.worker_stats()) for k, f in sides.items()}
    flat, hier = results["flat"].parameters, results["hier"].parameters
    gap = max(float(np.max(np.abs(flat[k].astype(np.float64) - hier[k]))) for k in flat)
    size = sum(v.size for v in flat.values())
    received = {
        "flat": WORKERS * size * 8.0,  # the star pre-aggregates: one float64 sum per worker
        "hier": results["hier"].history[-1].metrics["root_bytes"],  # measured
    }
    per_client = args.clients * size * 4  # what a star without pre-aggregation receives
    median = {kind: statistics.median(values) for kind, values in seconds.items()}
    ratio = median["hier"] / median["flat"]
    verdict = "met" if ratio <= 1.1 and gap <= 1e-6 else "MISSED"
    for kind, label in (("flat", "flat star"), ("hier", "hierarchy")):
        print(
            f"| {name} | {label} | {median[kind]:.3f} | {received[kind] / 1024:.1f} | "
            f"{per_client / 2**20:.1f} | {workers_mb[kind]:.0f} | {memory.peak_mb:.0f} | "
            f"{ratio if kind == 'hier' else 1.0:.2f} | {gap:.2g} | {verdict} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    ray.init(num_cpus=WORKERS, include_dashboard=False, logging_level=logging.WARNING)
    print(machine())
    print(
        f"{args.clients} clients; tree depth 2, width 4, 4 LCPs per leaf relay "
        f"({len(TREE.lcps)} LCPs); {WORKERS} workers per side; median of {args.rounds} "
        "alternating rounds"
    )
    print(
        "| workload | side | s/round | KiB the root receives per round | MiB without "
        "pre-aggregation | peak RSS of its 2 workers MB | peak RSS driver + all 4 workers MB | "
        "hier / flat | max model gap | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    n = args.clients
    echo = EchoClient.initial_parameters()
    workload("echo", lambda kind: make(kind, EchoClient, {}, n, echo), args)
    digits = LazyDigitsOptions(size=20, epochs=5, lr=0.1, batch_size=32)
    init = SoftmaxRegression().init_parameters()
    options = digits.model_dump()
    workload("digits", lambda kind: make(kind, LazyDigitsClient, options, n, init), args)
    ray.shutdown()


if __name__ == "__main__":
    main()
