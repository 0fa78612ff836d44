"""Secure aggregation, the protocol's arithmetic alone: one whole round in one process.

For (clients, parameters) = (20, 10k), (50, 10k), (100, 10k) and (50, 100k), runs a
round of :class:`~redfl.privacy.secagg.LocalRound` (the server and every client object,
no network, no Ray) with the default graph and encoding, and prints per stage the
seconds of all client calls together, of one client on average and of the server; the
whole round; the same round with 10% of the clients dropping before masking (the server
then rebuilds their mask keys and removes their pairwise masks); and, for scale, the
plain weighted sum of the same updates (what a round without secure aggregation
computes). First, the mask generator alone: microseconds per mask of 10k and 100k
entries. Every figure is the median of ``--repeats`` runs.

Target for later: a secure round of 100 clients x 10k parameters at most about 3x a plain
round of the federation (~10-40 ms), so a few ms per client and a fast unmasking.

Run: ``python bench/secagg_math.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import cryptography
import numpy as np

from redfl.core.arrays import WeightedSum
from redfl.privacy.secagg import STAGES, LocalRound, SecAggConfig, Stage
from redfl.privacy.secagg.prg import expand

CASES = [(20, 10_000), (50, 10_000), (100, 10_000), (50, 100_000)]


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``call`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prg_table(repeats: int) -> None:
    """Microseconds to expand one seed into a mask of 10k and 100k entries."""
    seed = os.urandom(32)
    print("mask generator (AES-256-CTR keystream), median microseconds per mask:")
    for length in (10_000, 100_000):
        row = []
        for dtype in (np.uint32, np.uint64):
            seconds = median_seconds(partial(expand, seed, length, dtype), repeats * 20)
            row.append(f"{np.dtype(dtype).name} {seconds * 1e6:7.1f}")
        print(f"  {length:>7,} entries: " + "   ".join(row))


def one_round(
    config: SecAggConfig, updates: dict[int, tuple[dict[str, np.ndarray], float]], dropped: int
) -> tuple[float, dict[str, dict[str, float]]]:
    """Seconds of one round, and its per-stage split; ``dropped`` clients go before masking."""
    local = LocalRound(config)
    gone: dict[Stage, set[int]] = {"masked_input": set(config.clients[:dropped])}
    start = time.perf_counter()
    result = local.run(updates, gone)
    seconds = time.perf_counter() - start
    assert len(result.survivors) == len(config.clients) - dropped
    return seconds, {stage: dict(split) for stage, split in local.seconds.items()}


def case(clients: int, size: int, repeats: int) -> None:
    """Print the stage table of one (clients, parameters) case."""
    rng = np.random.default_rng(0)
    shape = {"w": np.zeros(size, np.float32)}
    config = SecAggConfig.create(range(clients), shape, rnd=1)
    updates = {c: ({"w": rng.normal(0, 0.1, size).astype(np.float32)}, 1.0) for c in range(clients)}
    runs = [one_round(config, updates, 0) for _ in range(repeats)]
    dropping = [one_round(config, updates, clients // 10) for _ in range(repeats)]

    def plain() -> None:
        total = WeightedSum()
        for parameters, weight in updates.values():
            total.add(parameters, weight)

    plain_seconds = median_seconds(plain, repeats)
    print(
        f"\n{clients} clients x {size:,} parameters (k={config.neighbours}, "
        f"t={config.threshold}, modulus 2^{config.quantizer.modulus_bits}, "
        f"bits={config.quantizer.bits}):"
    )
    print(f"  {'stage':<15} {'clients ms':>11} {'per client ms':>14} {'server ms':>10}")
    client_total = server_total = 0.0
    for stage in STAGES:
        spent = statistics.median(run[1][stage]["clients"] for run in runs)
        server = statistics.median(run[1][stage]["server"] for run in runs)
        client_total += spent
        server_total += server
        print(
            f"  {stage:<15} {spent * 1e3:11.2f} {spent / clients * 1e3:14.3f} {server * 1e3:10.2f}"
        )
    print(
        f"  {'all stages':<15} {client_total * 1e3:11.2f} "
        f"{client_total / clients * 1e3:14.3f} {server_total * 1e3:10.2f}"
    )
    whole = statistics.median(run[0] for run in runs)
    whole_dropping = statistics.median(run[0] for run in dropping)
    unmask_dropping = statistics.median(run[1]["unmasking"]["server"] for run in dropping)
    print(
        f"  round {whole * 1e3:.1f} ms (in one process: every client's work plus the "
        f"server's); server + one client {(server_total + client_total / clients) * 1e3:.1f}"
        " ms"
    )
    print(
        f"  with {clients // 10} dropped before masking: round {whole_dropping * 1e3:.1f} ms, "
        f"server unmasking {unmask_dropping * 1e3:.1f} ms"
    )
    print(f"  plain weighted sum of the same updates: {plain_seconds * 1e3:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (median)")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores {platform.machine()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}, cryptography "
        f"{cryptography.__version__}"
    )
    prg_table(args.repeats)
    for clients, size in CASES:
        case(clients, size, args.repeats)


if __name__ == "__main__":
    main()
