"""Star overhead: redfl on Ray against a plain serial numpy loop doing the same math.

Workload "digits softmax": digits pixels / 16, tiled 4 times, shuffled
with seed 0, split into N IID parts; softmax regression (64x10 + 10, zero init); 5 local
epochs of SGD, lr 0.1, batch 32; FedAvg weighted by examples; all clients every round.

Prints, for N = 100 and 1000 clients x 20 rounds: the plain loop's seconds per round,
redfl's steady-state seconds per round (median of rounds 2..20: round 1 builds the
clients and loads data; best of ``--repeats`` interleaved runs for each side, because
this 2-core VM's speed drifts between runs), the target ``1.4 x plain / workers + 10 ms``,
the ratio to ``plain / workers`` and the largest difference between the two final models.

Run: ``make bench`` (or ``OMP_NUM_THREADS=1 python bench/star_overhead.py``).

``--compare REF`` instead times redfl's side of this code against the code of the git
revision ``REF`` (checked out in a temporary worktree), alternating whole processes, and
prints before / after seconds per round (no regression: after <= before on the same
machine in the same run).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: single-threaded BLAS
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import inspect
import json
import logging
import multiprocessing
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import ray
from common import REPO, baseline_tree

from redfl import FedAvg, StarFederation
from redfl.core.seeding import client_rng
from redfl.examples.digits import DigitsClient, DigitsOptions, client_data

SEED = 0
OPTIONS = DigitsOptions(partition="iid", tile=4, test_fraction=0.0, lr=0.1, epochs=5, batch_size=32)


def plain_loop(
    num_clients: int, rounds: int, share: range | None = None
) -> tuple[dict[str, np.ndarray], list[float]]:
    """FedAvg written out by hand, one client after another, as lean as numpy allows.

    Data preparation (bias column, one-hot labels) happens once, outside the timing.
    ``share`` restricts the loop to some clients (for the two-process reference).
    """
    data = []
    for i in share if share is not None else range(num_clients):
        x, y = client_data(OPTIONS, i, num_clients)
        xa = np.concatenate((x, np.ones((len(y), 1), np.float32)), axis=1)
        data.append((xa, np.eye(10, dtype=np.float32)[y]))
    theta = np.zeros((65, 10), np.float32)  # weight rows, then the bias row
    lr, epochs, batch = OPTIONS.lr, OPTIONS.epochs, OPTIONS.batch_size
    seconds = []
    for rnd in range(1, rounds + 1):
        start = time.perf_counter()
        total_theta = np.zeros((65, 10), np.float64)
        total = 0
        for i, (xa, onehot) in zip(share or range(num_clients), data, strict=True):
            rng = client_rng(SEED, rnd, f"client-{i}")
            local = theta.copy()
            n = len(xa)
            for _ in range(epochs):
                order = rng.permutation(n)
                for lo in range(0, n, batch):
                    idx = order[lo : lo + batch]
                    xb, yb = (xa, onehot) if n <= batch else (xa[idx], onehot[idx])
                    z = xb @ local
                    z -= z.max(axis=1, keepdims=True)
                    np.exp(z, out=z)
                    z /= z.sum(axis=1, keepdims=True)
                    z -= yb
                    z *= np.float32(lr / len(xb))
                    local -= xb.T @ z
            total_theta += n * local.astype(np.float64)
            total += n
        theta = (total_theta / total).astype(np.float32)
        seconds.append(time.perf_counter() - start)
    return {"weight": theta[:64], "bias": theta[64]}, seconds


def _half(args: tuple[int, int, range]) -> float:
    _, seconds = plain_loop(*args)
    return statistics.median(seconds[1:])


def parallel_plain(num_clients: int, rounds: int, workers: int) -> float:
    """The plain loop split over ``workers`` processes with no exchange at all: what this
    machine gives for perfectly parallel work (a lower bound for any distributed run)."""
    shares = [range(w, num_clients, workers) for w in range(workers)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return max(pool.map(_half, [(num_clients, rounds, share) for share in shares]))


def redfl_run(num_clients: int, rounds: int) -> tuple[dict[str, np.ndarray], list[float], int]:
    """The same federation on redfl's Ray runtime (one worker per CPU)."""
    # The keyword of the clients' options (``client_options`` in code before it was renamed,
    # which ``--compare`` may time).
    taken = inspect.signature(StarFederation).parameters
    keyword = "options" if "options" in taken else "client_options"
    fed = StarFederation(
        DigitsClient,
        num_clients,
        initial_parameters=DigitsClient.initial_parameters(OPTIONS),
        strategy=FedAvg(fraction_fit=1.0, min_fit_clients=num_clients),
        seed=SEED,
        **{keyword: OPTIONS.model_dump()},  # type: ignore[arg-type]
    )
    try:
        result = fed.train(rounds)
        workers = len(fed.worker_stats())
    finally:
        fed.stop()
    assert result.parameters is not None
    return result.parameters, [r.seconds for r in result.history], workers


def fmt(values: list[float]) -> str:
    return " ".join(f"{v:.4f}" for v in values)


def one_side(clients: int, rounds: int) -> None:
    """Print redfl's median steady round (JSON) for the code on ``sys.path`` (a subprocess)."""
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    _, seconds, workers = redfl_run(clients, rounds)
    ray.shutdown()
    print(json.dumps({"steady": statistics.median(seconds[1:]), "workers": workers}))


def compare(ref: str, clients_list: list[int], rounds: int, repeats: int) -> None:
    """Before (``ref``) and after (this tree), alternating whole processes."""
    sha, tree = baseline_tree(ref)
    print(f"before: {ref} ({sha}); after: {REPO}; {repeats} alternating runs each")
    columns = f"{'before s/rnd':>12} {'after s/rnd':>11} {'after/before':>12}"
    print(f"{'clients':>7} {'rounds':>6} {columns}")
    for clients in clients_list:
        runs: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(repeats):
            for side, root in (("before", tree), ("after", REPO)):
                env = {**os.environ, "PYTHONPATH": str(root)}
                command = [sys.executable, __file__, "--side", str(clients), str(rounds)]
                out = subprocess.run(  # a neutral folder: Ray puts the cwd on workers' paths
                    command, env=env, capture_output=True, text=True, check=True, cwd=tree.parent
                )
                runs[side].append(json.loads(out.stdout.strip().splitlines()[-1])["steady"])
        before, after = min(runs["before"]), min(runs["after"])
        print(
            f"{clients:>7} {rounds:>6} {before:>12.4f} {after:>11.4f} {after / before:>12.2f}  "
            f"(before {fmt(runs['before'])}; after {fmt(runs['after'])})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", metavar="REF", help="time redfl against revision REF")
    parser.add_argument("--side", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return one_side(*args.side)
    if args.compare:
        return compare(args.compare, args.clients, args.rounds, args.repeats)
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    cpus = int(ray.cluster_resources()["CPU"])  # type: ignore[no-untyped-call]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, "
        f"Ray {ray.__version__}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, Ray CPUs {cpus}"
    )
    header = (
        f"{'clients':>7} {'rounds':>6} {'plain s/rnd':>11} {'workers':>7} {'redfl s/rnd':>11} "
        f"{'target s/rnd':>12} {'ratio':>6} {'max |diff|':>10} {'verdict':>7}"
    )
    print(header)
    for clients in args.clients:
        plain_runs, redfl_runs, split_runs = [], [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both sides alike
            plain_params, plain_seconds = plain_loop(clients, args.rounds)
            params, seconds, workers = redfl_run(clients, args.rounds)
            split_runs.append(parallel_plain(clients, args.rounds, workers))
            plain_runs.append(statistics.median(plain_seconds[1:]))
            redfl_runs.append(statistics.median(seconds[1:]))
        plain, steady, split = min(plain_runs), min(redfl_runs), min(split_runs)
        target = 1.4 * plain / workers + 0.010
        ratio = steady / (plain / workers)
        diff = max(float(np.abs(params[k] - plain_params[k]).max()) for k in params)
        ok = steady <= target and diff <= 1e-4
        print(
            f"{clients:>7} {args.rounds:>6} {plain:>11.4f} {workers:>7} {steady:>11.4f} "
            f"{target:>12.4f} {ratio:>6.2f} {diff:>10.2e} {'PASS' if ok else 'MISS':>7}"
        )
        print(
            f"        plain loop split over {workers} processes, no exchange: {split:.4f} s/rnd "
            f"(redfl / that = {steady / split:.2f}); repeats: plain {fmt(plain_runs)}, "
            f"redfl {fmt(redfl_runs)}, split {fmt(split_runs)}"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
