"""Decentralised scale: 1,000 gossip nodes on 2 workers, all blocked in receive at once.

Workload: gossip averaging (Metropolis-Hastings weights) of a 10,000-parameter float64
vector per node, on a 1,000-node ring and a 1,000-node k_connect(1000, 4), 2 workers.
A first ``train(1)`` starts the workers, builds the nodes and runs the degree exchange
and round 1; then ``train(10)`` is timed: 10 rounds.

Memory: the peak, sampled every 0.1 s from /proc, of the resident memory (RSS, the
verdict's measure) and of the proportional set size (PSS: shared pages split between the
processes sharing them, so Ray's shared-memory object store counts once) of the driver
plus all Ray worker processes (processes descending from this driver whose command line
is ``ray::...``); Ray's own daemons (raylet, GCS, agents) are printed apart.
Targets: under 2 GB, and under 1 s per round.

Run: ``make bench`` (or ``python bench/decentralized_scale.py [--nodes 1000]``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import logging
import threading
import time
from pathlib import Path

import numpy as np
import ray

from redfl import GossipNode, KConnectFederation, ResourcesConfig, RingFederation
from redfl.schemas.decentralized import DecentralizedFederation

TARGET_MB = 2048.0
TARGET_S = 1.0
PAGE_KB = os.sysconf("SC_PAGE_SIZE") / 1024


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command line, RSS MB) for every readable process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            rss_pages = int((entry / "statm").read_text().split()[1])
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found[int(entry.name)] = (ppid, cmd.strip(), rss_pages * PAGE_KB / 1024)
    return found


def _pss_mb(pid: int) -> float:
    """``pid``'s proportional set size in MB: its private pages plus its share of the pages
    it shares (Ray's object store is shared memory: summed RSS counts a page once for every
    process that touched it, summed PSS once in all)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def memory_mb() -> tuple[float, float, float]:
    """(driver + Ray workers RSS, Ray daemons RSS, driver + Ray workers PSS) in MB, over
    this driver's descendants."""
    procs = _processes()
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    stack, mine = [me], []
    while stack:
        pid = stack.pop()
        mine.append(pid)
        stack.extend(children.get(pid, []))
    working = [p for p in mine if p == me or procs[p][1].startswith("ray::")]
    workers = sum(procs[p][2] for p in working)
    daemons = sum(procs[p][2] for p in mine if p != me and not procs[p][1].startswith("ray::"))
    return workers, daemons, sum(_pss_mb(p) for p in working)


class PeakSampler:
    """Samples :func:`memory_mb` in a thread; keeps the peaks."""

    def __init__(self) -> None:
        self.peak = (0.0, 0.0, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = memory_mb()
            self.peak = (
                max(self.peak[0], now[0]),
                max(self.peak[1], now[1]),
                max(self.peak[2], now[2]),
            )
            self._stop.wait(0.1)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(name: str, fed: DecentralizedFederation, rounds: int) -> None:
    """Warm up, time ``rounds`` rounds, check the result, print one table row."""
    with PeakSampler() as sampler:
        try:
            start = time.perf_counter()
            fed.train(1)
            first = time.perf_counter() - start
            start = time.perf_counter()
            result = fed.train(rounds)
            per_round = (time.perf_counter() - start) / rounds
            stats = fed.worker_stats()
            sample = fed.pull_version(fed.nodes[0].node_id)[1]["parameters"]["x"]
        finally:
            fed.stop()
    mean = result.parameters["x"] if result.parameters is not None else np.zeros(1)
    gap = result.history[-1].metrics["neighbour_gap"]
    peak, daemons, pss = sampler.peak
    ok = peak < TARGET_MB and per_round < TARGET_S
    print(
        f"| {name} | {len(fed.nodes)} | {len(stats)} | {sample.size} | {first:.2f} | "
        f"{per_round:.3f} | {per_round / TARGET_S:.2f} | {peak:.0f} | {peak / TARGET_MB:.2f} | "
        f"{pss:.0f} | "
        f"{daemons:.0f} | {gap:.3g} | {np.abs(sample - mean).max():.3g} | "
        f"{'met' if ok else 'MISSED'} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level=logging.WARNING)
    resources = ResourcesConfig(num_workers=args.workers)
    options = {"size": args.size, "timeout": 600.0}
    print(
        "| graph | nodes | workers | params | first train(1) s | s/round | ratio to 1 s | "
        "peak RSS MB (driver + workers) | ratio to 2 GB | peak PSS MB (driver + workers) | "
        "Ray daemons MB | neighbour gap | node-0 max dist to mean | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    n = args.nodes
    ring = RingFederation(GossipNode, n, options=options, resources=resources)
    run(f"ring({n})", ring, args.rounds)
    kconn = KConnectFederation(GossipNode, n, 4, options=options, resources=resources)
    run(f"k_connect({n}, 4)", kconn, args.rounds)
    ray.shutdown()


if __name__ == "__main__":
    main()
