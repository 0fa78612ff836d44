"""Edge benchmark: routing stability, wire cost, proxy throughput, time to 20 versions and
NVFlare's job shape, with the memory of every process; each run with internal
authentication (every hop mutual TLS, credentials from a provisioned folder) and again with
TLS on the proxy's port too, against the code before (``--compare REF``: the same runs of
that revision's own bench script, in a worktree of it), and the cost of each.

    python bench/edge.py [--devices 10000] [--concurrency 64] [--skip-load]
                         [--runs nvflare,load] [--compare REF | --compare none]

Figures are printed next to their targets. Processes: the server, 4 LCPs and the proxy run as
separate processes (``redfl edge ...``); the simulator runs in this process (devices enrol
with the development secret, as before, so the request mix is the same).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import psutil
from common import baseline_tree

from redfl.edge.fleet import Fleet
from redfl.edge.hashing import score
from redfl.edge.launch import EdgeProcesses
from redfl.edge.peers import Peers
from redfl.edge.protocol import ResultRequest, Status, TaskReply, decode_arrays, encode_arrays
from redfl.edge.provision import Member, load_or_create_secrets
from redfl.edge.simulator import SimulatorConfig, Summary, print_summary, run_simulation
from redfl.provision.folder import write_folder
from redfl.topology.tree import relay_tree
from redfl.topology.tree_file import TreeFile
from redfl.trust import Kind

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
        print(
            f"  N={n:2d}: add one {added:.4f} (1/(N+1) = {1 / (n + 1):.4f}), "
            f"remove one {removed:.4f} (1/N = {1 / n:.4f})"
        )


def auth_cost() -> None:
    """CPU per request of the checks authentication adds, in-process: a device token (first
    sight and remembered) with the register lookup, a peer certificate (first sight and
    remembered), and a TLS handshake with client certificates (once per connection)."""
    import ssl

    with tempfile.TemporaryDirectory() as tmp:
        folder = provisioned(Path(tmp), {})  # development enrolment: any id
        fleet = Fleet.of_tree(folder)
        reps = 2_000
        tokens = [fleet.signer.issue(f"device-{i}")[0] for i in range(reps)]
        proxy = Member.load(folder, "proxy")
        lcp = Member.load(folder, "lcp-1-1")
        pem = proxy.bundle.cert_pem
        accepted: dict[Kind, None] = {"proxy": None}

        def per_call(calls: list[Callable[[], object]]) -> float:
            start = time.process_time()
            for call in calls:
                call()
            return (time.process_time() - start) / len(calls) * 1e6

        first_token = per_call([partial(fleet.verify, t) for t in tokens])  # each one new
        known_token = per_call([partial(fleet.verify, tokens[0])] * reps)

        def fresh_peers() -> object:  # a verifier that has seen nothing yet
            return Peers(lcp.bundle.ca_pem, lcp.peers.register_path).accept(pem, accepted)

        first_cert = per_call([fresh_peers] * 200)
        known_cert = per_call([partial(lcp.peers.accept, pem, accepted)] * reps)
        server_ctx, client_ctx = lcp.server_tls(), proxy.client_tls()
        start = time.process_time()
        for _ in range(200):
            one, two = socket.socketpair()
            server = server_ctx.wrap_socket(one, server_side=True, do_handshake_on_connect=False)
            client = client_ctx.wrap_socket(
                two, server_hostname="127.0.0.1", do_handshake_on_connect=False
            )
            server.setblocking(False)
            client.setblocking(False)
            done = {server: False, client: False}
            while not all(done.values()):
                for side in done:
                    if done[side]:
                        continue
                    try:
                        side.do_handshake()
                        done[side] = True
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
            server.close()
            client.close()
        handshake = (time.process_time() - start) / 200 * 1e3
    print("CPU of the checks authentication adds (in-process, per call)")
    print(
        f"  device token + register: first sight {first_token:.0f} us, remembered "
        f"{known_token:.1f} us"
    )
    print(
        f"  peer certificate (CA, register, kind): first sight (a new verifier) "
        f"{first_cert:.0f} us, "
        f"remembered {known_cert:.1f} us"
    )
    print(
        f"  mutual TLS handshake (both sides, P-256): {handshake:.2f} ms, once per kept-alive "
        "connection"
    )


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
    print(
        f"  safetensors bytes {len(raw):,}; base64 text {len(text):,} chars; "
        f"JSON list of floats would be {as_list:,} chars"
    )
    print(
        f"  /task reply body {len(task.model_dump_json()):,} B; "
        f"/result request body {len(result.model_dump_json()):,} B"
    )
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


def provisioned(root: Path, job: dict[str, object]) -> Path:
    """A provisioned folder for the 4 LCPs (free ports), the job, development enrolment."""
    folder = root / "tree"
    write_folder(folder, TreeFile("bench", 9000, relay_tree(1, 2, 2)))
    lcp_map = {n: {"host": "127.0.0.1", "port": free_port()} for n in LCPS}
    (folder / "lcp_map.json").write_text(json.dumps(lcp_map))
    (folder / "edge.toml").write_text('[enrollment]\nmode = "shared-secret"\n')
    (root / "job.json").write_text(json.dumps(job))
    return folder


def run_job(
    title: str,
    job: dict[str, object],
    devices: int,
    concurrency: int,
    wall_target: bool = False,
    proxy_tls: bool = False,
) -> dict[str, float]:
    """Run one job against a fresh deployment; print its figures and return the main ones
    (``job["delay"]``, when there, is the simulated devices' own time, not a job field)."""
    job = dict(job)
    delay = float(str(job.pop("delay", 0.0)))
    with tempfile.TemporaryDirectory() as tmp:
        tree = provisioned(Path(tmp), job)
        edge = EdgeProcesses(
            tree, Path(tmp) / "job.json", free_port(), free_port(), proxy_tls=proxy_tls
        )
        start = time.perf_counter()
        edge.start(timeout=180)
        startup = time.perf_counter() - start
        memory = Memory(edge)
        cpu0 = cpu_seconds(edge)
        own0 = sum(psutil.Process().cpu_times()[:2])
        load_start = load()
        try:
            secret = load_or_create_secrets(tree).enroll_secret
            ca = str(tree / "trust" / "ca.pem") if proxy_tls else None
            config = SimulatorConfig(
                edge.proxy_url,
                str(job["name"]),
                str(job["client"]),
                devices,
                concurrency,
                secret,
                timeout=1_200,
                ca=ca,
                delay=delay,
            )
            summary: Summary = run_simulation(config)
            stats = edge.get(f"{edge.proxy_url}/stats")
            server = edge.get(f"{edge.server_url}/status")
            status = edge.job(server["jobs"][-1]["job_id"])
            lcps = {n: edge.get(f"{a.url}/stats") for n, a in edge.lcps.items()}
            cpu1 = cpu_seconds(edge)
            own = sum(psutil.Process().cpu_times()[:2]) - own0
            load_end = load()
        finally:
            peak = memory.stop()
            edge.stop()
    print(
        f"\n{title}: {devices:,} devices, concurrency {concurrency}, start-up {startup:.1f} s "
        f"(not in the wall time); {load_start} at the start, {load_end} at the end"
    )
    print_summary(summary)
    forwarded = sum(stats["forwards"].values())
    proxy_cpu = (cpu1["proxy"] - cpu0["proxy"]) / max(1, summary.requests) * 1e3
    lcp_cpu = sum(cpu1[n] - cpu0[n] for n in LCPS) / max(1, forwarded) * 1e3
    wall = summary.seconds
    marks = ", ".join(f"{name} {t:.2f} s" for name, t in summary.marks.items())
    print(f"  phases (seconds from the simulation's start): {marks}")
    print("  replies: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items())))
    print(
        "  at the proxy (body read -> LCP answer): "
        + ", ".join(
            f"{p} p50 {v['p50_ms']:.1f} ms p99 {v['p99_ms']:.1f} ms (n={v['count']})"
            for p, v in sorted(stats["latency"].items())
        )
    )
    for path in ("/task", "/result"):
        if path in stats["latency"]:
            p99 = stats["latency"][path]["p99_ms"]
            print(f"  p99 at the proxy {path} {p99:.1f} ms: {ratio(p99, 50, True)} (< 50 ms)")
    rps = summary.requests / wall
    print(f"  throughput at the proxy {rps:.0f} req/s: {ratio(rps, 2_000, False)} (>= 2,000)")
    print(
        f"  CPU per request: proxy {proxy_cpu:.2f} ms, LCPs {lcp_cpu:.2f} ms "
        f"(capacity of one free core: proxy ~{1e3 / proxy_cpu:.0f} req/s)"
    )

    def p50_p99(timing: dict[str, float]) -> str:
        return f"p50 {timing['p50_ms']:.1f} ms p99 {timing['p99_ms']:.1f} ms"

    print(f"  server: {server['syncs']} syncs, time in sync() {p50_p99(server['sync'])}")
    for name, st in lcps.items():
        print(
            f"  {name}: {st['syncs']} syncs carrying {st['results']} results; /sync exchange "
            f"{p50_p99(st['sync'])}; fold -> verdict {p50_p99(st['verdict'])}, of which "
            f"waiting for the sync that carries it {p50_p99(st['queued'])}"
        )
    history = status["history"]
    print(
        f"  versions {status['version']} in {history[-1]['time']:.1f} s after the server started "
        f"(simulation wall {wall:.1f} s); accepted {status['accepted']}, "
        f"rejected {status['rejected']}, evicted {status['evicted']}"
    )
    print(
        "  server: version times after the server started "
        + ", ".join(f"v{h['version']} {h['time']:.2f} s" for h in history)
    )
    each = {k: cpu1[k] - cpu0[k] for k in cpu1}
    total = own + sum(each.values())
    print(
        f"  CPU time of all processes {total:.1f} s: simulator {own:.1f} s, "
        + ", ".join(f"{k} {v:.1f} s" for k, v in each.items())
    )
    if wall_target:
        print(
            f"  wall time of the simulation {wall:.1f} s: {ratio(wall, 10, True)} (< 10 s), "
            f"{load_end}"
        )
    print(
        f"  peak memory of all processes (server, 4 LCPs, proxy, simulator): {peak:.0f} MB: "
        f"{ratio(peak, 1024, True)} (< 1 GB)"
    )
    task_p99 = stats["latency"].get("/task", {}).get("p99_ms", float("nan"))
    return {
        "req/s": rps,
        "/task p99 ms": task_p99,
        "wall s": wall,
        "peak MB": peak,
        "proxy CPU ms/req": proxy_cpu,
        "LCP CPU ms/req": lcp_cpu,
    }


FIGURES = {
    "req/s": r"throughput at the proxy (\d+) req/s",
    "/task p99 ms": r"p99 at the proxy /task ([\d.]+) ms",
    "wall s": r"\d+ requests in ([\d.]+) s",
    "peak MB": r"peak memory of all processes \(server, 4 LCPs, proxy, simulator\): (\d+) MB",
    "proxy CPU ms/req": r"CPU per request: proxy ([\d.]+) ms",
    "LCP CPU ms/req": r"CPU per request: proxy [\d.]+ ms, LCPs ([\d.]+) ms",
}
"""How the figures read in the bench's own output (the baseline prints the same lines)."""


def baseline(ref: str, runs: str, devices: int, concurrency: int) -> dict[str, dict[str, float]]:
    """Run revision ``ref``'s own ``bench/edge.py`` (the code before) on the same runs; its
    output goes through, its figures are returned per run."""
    sha, tree = baseline_tree(ref)
    print(f"\n== before: {ref} ({sha}), its own bench/edge.py, load {os.getloadavg()[0]:.1f} ==")
    command = [
        sys.executable,
        "bench/edge.py",
        "--runs",
        runs,
        "--devices",
        str(devices),
        "--concurrency",
        str(concurrency),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    print(done.stdout[done.stdout.find("\nNVFlare") if "\nNVFlare" in done.stdout else 0 :])
    if done.returncode != 0:
        print(f"  (the baseline failed: {done.stderr[-500:]})")
    out: dict[str, dict[str, float]] = {}
    for run, text in zip(("nvflare", "load"), re.split(r"\nLoad: ", done.stdout), strict=False):
        figures = {k: float(m.group(1)) for k, p in FIGURES.items() if (m := re.search(p, text))}
        out[run] = figures
    return out


def cost_table(rows: dict[str, dict[str, dict[str, float]]]) -> None:
    """Before, with internal authentication, with TLS on the proxy's port too, and the cost
    (after / before) of each figure, per run."""
    print("\ncost of authentication and TLS (after / before; targets unchanged):")
    for run in ("nvflare", "load"):
        if not any(run in r for r in rows.values()):
            continue
        print(f"  {run}:")
        for figure in FIGURES:
            cells = []
            base = rows.get("before", {}).get(run, {}).get(figure)
            for name in ("before", "internal auth", "internal auth + proxy TLS"):
                value = rows.get(name, {}).get(run, {}).get(figure)
                if value is None:
                    cells.append(f"{name} -")
                    continue
                cost = f" ({value / base:.2f} x)" if base and name != "before" else ""
                cells.append(f"{name} {value:,.2f}{cost}")
            print(f"    {figure:18} " + "; ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--skip-load", action="store_true", help="only the pure figures")
    parser.add_argument("--runs", default="nvflare,load", help="which runs: nvflare, load")
    parser.add_argument(
        "--compare", default="9e1dd99", help="revision of the code before ('none': no baseline)"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    moved_fractions()
    wire_cost()
    auth_cost()
    if args.skip_load:
        return
    numeric = {"client": "redfl.examples.edge:NumericDevice", "options": {"num_parameters": 10_000}}
    nvflare = {
        "name": "nvflare-shape",
        **numeric,
        "device_selection_size": 50,
        "num_updates_for_model": 50,
        "max_model_version": 5,
        "delay": 0.1,
    }
    load = {
        "name": "load",
        **numeric,
        "device_selection_size": 1_000,
        "num_updates_for_model": 200,
        "max_model_version": 20,
    }
    rows: dict[str, dict[str, dict[str, float]]] = {}
    if args.compare != "none":
        rows["before"] = baseline(args.compare, args.runs, args.devices, args.concurrency)
    for name, tls in (("internal auth", False), ("internal auth + proxy TLS", True)):
        print(f"\n== {name} ==")
        got = rows.setdefault(name, {})
        if "nvflare" in args.runs:
            title = f"NVFlare's job shape, {name} (target: wall < 10 s, peak memory < 1 GB)"
            got["nvflare"] = run_job(title, nvflare, 1_000, 32, True, tls)
        if "load" in args.runs:
            title = f"Load: 10k-parameter model, 20 versions, {name}"
            got["load"] = run_job(title, load, args.devices, args.concurrency, False, tls)
    cost_table(rows)
    print(f"load average at the end {os.getloadavg()[0]:.1f} (2 cores shared with others)")


if __name__ == "__main__":
    main()
