"""Edge benchmark: routing stability, wire cost, proxy throughput, time to 20 versions and
NVFlare's job shape, with the memory of every process.

    python bench/edge.py [--devices 10000] [--concurrency 64] [--skip-load]

Figures are printed next to their targets. Processes: the server, 4 LCPs and the proxy run as
separate processes (``redfl edge ...``); the simulator runs in this process.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from redfl.edge.hashing import score
from redfl.edge.launch import EdgeProcesses
from redfl.edge.protocol import ResultRequest, Status, TaskReply, decode_arrays, encode_arrays
from redfl.edge.provision import load_or_create_secrets
from redfl.edge.simulator import SimulatorConfig, Summary, print_summary, run_simulation

LCPS = ["lcp-1-1", "lcp-1-2", "lcp-2-1", "lcp-2-2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def moved_fractions(num_ids: int = 100_000) -> None:
    ids = [f"device-{i}" for i in range(num_ids)]
    names = [*(f"lcp-{i}" for i in range(16)), "lcp-new"]
    table = {n: np.array([score(n, d) for d in ids], dtype=np.uint64) for n in names}

    def homes(lcps: list[str]) -> np.ndarray:
        return np.asarray(np.array(lcps)[np.argmax(np.stack([table[n] for n in lcps]), axis=0)])

    print(f"moved fraction over {num_ids:,} ids (target: within +-50 % of 1/N)")
    for n in (4, 8, 16):
        lcps = names[:n]
        before = homes(lcps)
        added = float(np.mean(before != homes([*lcps, "lcp-new"])))
        removed = float(np.mean(before != homes(lcps[1:])))
        print(f"  N={n:2d}: add one {added:.4f} (1/(N+1) = {1 / (n + 1):.4f}), "
              f"remove one {removed:.4f} (1/N = {1 / n:.4f})")  # fmt: skip


def wire_cost() -> None:
    model = {"value": np.random.default_rng(0).standard_normal(10_000).astype(np.float32)}
    text = encode_arrays(model)
    raw = base64.b64decode(text)
    task = TaskReply(status=Status.OK, task_id="lcp-1-1.ab12cd34.123", parameters=text)
    result = ResultRequest(job_id="job-1a2b3c4d", task_id="lcp-1-1.ab12cd34.123", parameters=text)
    reps = 2_000
    start = time.perf_counter()
    for _ in range(reps):
        encode_arrays(model)
    encode_us = (time.perf_counter() - start) / reps * 1e6
    start = time.perf_counter()
    for _ in range(reps):
        decode_arrays(text)
    decode_us = (time.perf_counter() - start) / reps * 1e6
    as_list = len(json.dumps(model["value"].tolist()))
    print("wire cost of a 10,000-float32 model")
    print(f"  safetensors bytes {len(raw):,}; base64 text {len(text):,} chars; "
          f"JSON list of floats would be {as_list:,} chars")  # fmt: skip
    print(f"  /task reply body {len(task.model_dump_json()):,} B; "
          f"/result request body {len(result.model_dump_json()):,} B")  # fmt: skip
    print(f"  encode {encode_us:.0f} us, decode (with finiteness check) {decode_us:.0f} us")


class Memory:
    """Peak summed RSS of this process and the deployment's processes."""

    def __init__(self, edge: EdgeProcesses) -> None:
        self.edge, self.peak_mb, self._stop = edge, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now_mb(self) -> float:
        total = psutil.Process().memory_info().rss
        for pid in self.edge.pids():
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        return float(total / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_mb = max(self.peak_mb, self.now_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def cpu_seconds(edge: EdgeProcesses) -> dict[str, float]:
    out = {}
    for key, proc in edge.procs.items():
        try:
            times = psutil.Process(proc.pid).cpu_times()
            out[key] = times.user + times.system
        except psutil.Error:
            pass
    return out


def ratio(value: float, target: float, below: bool) -> str:
    """``value / target`` and whether the target is met (``below``: the value must be lower)."""
    met = value < target if below else value >= target
    return f"{value / target:.2f} x target, {'met' if met else 'NOT met'}"


def load() -> str:
    """The 1-minute load average (the 2 cores are shared with other engineers)."""
    return f"load {os.getloadavg()[0]:.1f}"


def run_job(
    title: str, job: dict[str, object], devices: int, concurrency: int, wall_target: bool = False
) -> None:
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        lcp_map = {n: {"host": "127.0.0.1", "port": free_port()} for n in LCPS}
        (tree / "lcp_map.json").write_text(json.dumps(lcp_map))
        (tree / "job.json").write_text(json.dumps(job))
        edge = EdgeProcesses(tree, tree / "job.json", free_port(), free_port())
        start = time.perf_counter()
        edge.start(timeout=180)
        startup = time.perf_counter() - start
        memory = Memory(edge)
        cpu0 = cpu_seconds(edge)
        own0 = sum(psutil.Process().cpu_times()[:2])
        load_start = load()
        try:
            secret = load_or_create_secrets(tree).enroll_secret
            config = SimulatorConfig(edge.proxy_url, str(job["name"]), devices, concurrency,
                                     "numeric", secret, timeout=1_200)  # fmt: skip
            summary: Summary = run_simulation(config)
            stats = httpx.get(f"{edge.proxy_url}/stats").json()
            status = httpx.get(f"{edge.server_url}/status").json()
            lcps = {n: httpx.get(f"{a.url}/stats").json() for n, a in edge.lcps.items()}
            cpu1 = cpu_seconds(edge)
            own = sum(psutil.Process().cpu_times()[:2]) - own0
            load_end = load()
        finally:
            peak = memory.stop()
            edge.stop()
    print(f"\n{title}: {devices:,} devices, concurrency {concurrency}, start-up {startup:.1f} s "
          f"(not in the wall time); {load_start} at the start, {load_end} at the end")  # fmt: skip
    print_summary(summary)
    forwarded = sum(stats["forwards"].values())
    proxy_cpu = (cpu1["proxy"] - cpu0["proxy"]) / max(1, summary.requests) * 1e3
    lcp_cpu = sum(cpu1[n] - cpu0[n] for n in LCPS) / max(1, forwarded) * 1e3
    wall = summary.seconds
    marks = ", ".join(f"{name} {t:.2f} s" for name, t in summary.marks.items())
    print(f"  phases (seconds from the simulation's start): {marks}")
    print("  replies: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items())))
    print("  at the proxy (body read -> LCP answer): "
          + ", ".join(f"{p} p50 {v['p50_ms']:.1f} ms p99 {v['p99_ms']:.1f} ms (n={v['count']})"
                      for p, v in sorted(stats["latency"].items())))  # fmt: skip
    for path in ("/task", "/result"):
        if path in stats["latency"]:
            p99 = stats["latency"][path]["p99_ms"]
            print(f"  p99 at the proxy {path} {p99:.1f} ms: {ratio(p99, 50, True)} (< 50 ms)")
    rps = summary.requests / wall
    print(f"  throughput at the proxy {rps:.0f} req/s: {ratio(rps, 2_000, False)} (>= 2,000)")
    print(f"  CPU per request: proxy {proxy_cpu:.2f} ms, LCPs {lcp_cpu:.2f} ms "
          f"(capacity of one free core: proxy ~{1e3 / proxy_cpu:.0f} req/s)")  # fmt: skip

    def p50_p99(timing: dict[str, float]) -> str:
        return f"p50 {timing['p50_ms']:.1f} ms p99 {timing['p99_ms']:.1f} ms"

    print(f"  server: {status['syncs']} syncs, time in sync() {p50_p99(status['sync'])}")
    for name, st in lcps.items():
        print(f"  {name}: {st['syncs']} syncs carrying {st['results']} results; /sync exchange "
              f"{p50_p99(st['sync'])}; fold -> verdict {p50_p99(st['verdict'])}, of which "
              f"waiting for the sync that carries it {p50_p99(st['queued'])}")  # fmt: skip
    history = status["history"]
    print(f"  versions {status['version']} in {history[-1]['time']:.1f} s after the server started "
          f"(simulation wall {wall:.1f} s); accepted {status['accepted']}, "
          f"rejected {status['rejected']}, evicted {status['evicted']}")  # fmt: skip
    print("  server: version times after the server started "
          + ", ".join(f"v{h['version']} {h['time']:.2f} s" for h in history))  # fmt: skip
    each = {k: cpu1[k] - cpu0[k] for k in cpu1}
    total = own + sum(each.values())
    print(f"  CPU time of all processes {total:.1f} s: simulator {own:.1f} s, "
          + ", ".join(f"{k} {v:.1f} s" for k, v in each.items()))  # fmt: skip
    if wall_target:
        print(f"  wall time of the simulation {wall:.1f} s: {ratio(wall, 10, True)} (< 10 s), "
              f"{load_end}")  # fmt: skip
    print(f"  peak memory of all processes (server, 4 LCPs, proxy, simulator): {peak:.0f} MB: "
          f"{ratio(peak, 1024, True)} (< 1 GB)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--skip-load", action="store_true", help="only the pure figures")
    parser.add_argument("--runs", default="nvflare,load", help="which runs: nvflare, load")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    moved_fractions()
    wire_cost()
    if args.skip_load:
        return
    nvflare = {"name": "nvflare-shape", "task": "numeric", "num_parameters": 10_000,
               "device_selection_size": 50, "num_updates_for_model": 50, "max_model_version": 5,
               "max_delay": 0.1}  # fmt: skip
    if "nvflare" in args.runs:
        title = "NVFlare's job shape (target: wall < 10 s, peak memory < 1 GB)"
        run_job(title, nvflare, 1_000, 32, wall_target=True)
    if "load" not in args.runs:
        return
    load = {"name": "load", "task": "numeric", "num_parameters": 10_000,
            "device_selection_size": 1_000, "num_updates_for_model": 200,
            "max_model_version": 20, "max_delay": 0.0}  # fmt: skip
    run_job("Load: 10k-parameter model, 20 versions", load, args.devices, args.concurrency)
    print(f"load average at the end {os.getloadavg()[0]:.1f} (2 cores shared with others)")


if __name__ == "__main__":
    main()
