"""Edge jobs benchmark: the server's fan-in with aggregating relays against LCPs syncing
directly; a job running a user-supplied numpy device class of 100k parameters through 1,000
simulated devices; the time a SIGKILLed edge server takes to serve again; and, toward fleets
of millions (in-process, no HTTP), the server's memory per enrolled device, its time per
sync, and one LCP's memory.

    python bench/edge_jobs.py [--runs fanin,user,restart,fleet] [--fleet-max 1000000]

Each figure is printed with the load average (the machine's 2 cores are shared with other
engineers' work, so wall times are noisy) and, where the issue names one, its target.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # the bench's own device class, and bench/edge.py's helpers

from edge import Memory, cpu_seconds, free_port, provisioned  # noqa: E402

from redfl.edge.fleet import Fleet  # noqa: E402
from redfl.edge.jobs import JobSpec  # noqa: E402
from redfl.edge.launch import EdgeProcesses  # noqa: E402
from redfl.edge.lcp import LcpService  # noqa: E402
from redfl.edge.protocol import encode_arrays  # noqa: E402
from redfl.edge.server import EdgeServer  # noqa: E402
from redfl.edge.simulator import SimulatorConfig, Summary, print_summary, run_simulation  # noqa: E402
from redfl.edge.wire import JobSync, PartialMsg, SyncReply, SyncRequest  # noqa: E402
from redfl.topology.tree import relay_tree  # noqa: E402

NUMERIC = "redfl.examples.edge:NumericDevice"


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def partial_sum(
    lcps: Sequence[str], per_lcp: int, base: int, ones: np.ndarray, numbers: Iterator[int]
) -> PartialMsg:
    """``per_lcp`` updates of ones from each of ``lcps`` on version ``base``, folded into
    one partial sum (an LCP's own, or a relay's sum of its subtree's)."""
    ids = [f"{lcp}.b.{next(numbers)}" for lcp in lcps for _ in range(per_lcp)]
    count = len(ids)
    sums = encode_arrays({"value": ones * count}, np.float64)
    devices = [f"d{i}" for i in range(count)]
    return PartialMsg(
        base_version=base, sums=sums, weight=float(count), task_ids=ids, devices=devices
    )


def fanin(params: int = 10_000, versions: int = 20, per_sync: int = 4) -> None:
    """The server's side of 64 LCPs under a depth-2, width-4 tree (4 LCPs per leaf relay):
    every LCP folds ``per_sync`` updates per sync; directly, the server takes 64 syncs for
    them, through aggregating relays 4 (each top relay's sum of its 16 LCPs' sums). The
    relays' own summing is spread over the relays and not in these figures."""
    tree = relay_tree(2, 4, 4)
    lcps = [site.name for site in tree.lcps]
    tops = [site.name for site in tree.children("server", ["relay"])]
    ones = np.ones(params, np.float64)
    print(
        f"\nfan-in: {len(lcps)} LCPs, depth-2 width-4 tree ({len(tops)} top relays), "
        f"{params:,}-parameter model, {per_sync} updates per LCP sync, {versions} versions "
        f"({load()})"
    )
    models = {}
    for mode in ("direct", "relays"):
        with tempfile.TemporaryDirectory() as tmp:
            spec = JobSpec(
                name="fanin",
                client=NUMERIC,
                options={"num_parameters": params},
                num_updates_for_model=len(lcps) * per_sync,
                max_model_version=versions,
                max_model_history=versions,
                staleness_weight=False,
            )
            server = EdgeServer(Path(tmp))
            job = server.submit(spec)
            numbers = itertools.count()

            senders = lcps if mode == "direct" else tops
            under = {
                s: frozenset(tree.lcps_under(s)) if s in tops else frozenset({s}) for s in senders
            }
            seq = dict.fromkeys(senders, 0)
            cpu = wall = 0.0
            syncs = 0
            while job.running:
                version = job.fedbuff.version
                requests = []
                for sender in senders:
                    sums = partial_sum(sorted(under[sender]), per_sync, version, ones, numbers)
                    part = JobSync(known_version=version, partials=[sums])
                    requests.append(
                        SyncRequest(
                            sender=sender, boot="b", seq=seq[sender], jobs={job.job_id: part}
                        )
                    )
                    seq[sender] += 1
                c0, w0 = time.process_time(), time.perf_counter()
                for sender, request in zip(senders, requests, strict=True):
                    server.sync(request, under[sender])
                cpu += time.process_time() - c0
                wall += time.perf_counter() - w0
                syncs += len(requests)
            models[mode] = job.fedbuff.parameters["value"].copy()
            print(
                f"  {mode:7}: {syncs:5} syncs at the server ({syncs / versions:.0f} a version), "
                f"{syncs / wall:,.0f} syncs/s, CPU {cpu:.2f} s ({cpu / versions * 1e3:.1f} ms "
                f"a version), {job.fedbuff.accepted:,} updates folded"
            )
    same = np.array_equal(models["direct"], models["relays"])
    print(f"  the same model in both modes: {same} (value {float(models['relays'][0]):g})")


def user_model(devices: int = 1_000, params: int = 100_000) -> None:
    """A job of the bench's own numpy device class (``edge_bench_device:DenseDevice``, 100k
    parameters) through ``devices`` simulated devices, on server + 4 LCPs + proxy processes."""
    job = {
        "name": "dense",
        "client": "edge_bench_device:DenseDevice",
        "options": {"size": params},
        "evaluate": "edge_bench_device:distance",
        "num_updates_for_model": 100,
        "max_model_version": 10,
        "max_model_history": 4,
        "device_selection_size": 200,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tree = provisioned(Path(tmp), job)
        edge = EdgeProcesses(tree, Path(tmp) / "job.json", free_port(), free_port())
        edge.start(timeout=180)
        memory = Memory(edge)
        start_load = load()
        try:
            tokens = Fleet.of_tree(tree).issue(f"dev-{i:05d}" for i in range(devices))
            config = SimulatorConfig(
                edge.proxy_url,
                "dense",
                "edge_bench_device:DenseDevice",
                devices,
                64,
                tokens=tokens,
                timeout=1_200,
            )
            summary: Summary = run_simulation(config)
            [listed] = edge.get(f"{edge.server_url}/jobs")["jobs"]
            status = edge.job(listed["job_id"])
            cpu = cpu_seconds(edge)
        finally:
            peak = memory.stop()
            edge.stop()
    print(
        f"\nuser model: {params:,}-parameter numpy device class, {devices:,} devices "
        f"({start_load} at the start, {load()} at the end)"
    )
    print_summary(summary)
    rate = status["version"] / summary.seconds
    print(
        f"  {status['version']} versions in {summary.seconds:.1f} s: {rate:.2f} versions/s; "
        f"distance to the target v0 {status['history'][0]['loss']:.3f} -> "
        f"v{status['version']} {status['loss']:.3f}"
    )
    print(
        f"  peak memory of all processes (server, 4 LCPs, proxy, simulator) {peak:.0f} MB; "
        "CPU s " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
    )


def restart(devices: int = 200) -> None:
    """SIGKILL the edge server mid-job under ``redfl edge up``'s supervisor; the time until it
    answers again and until the job makes its next version."""
    job = {
        "name": "restart",
        "client": NUMERIC,
        "options": {"num_parameters": 10_000},
        "num_updates_for_model": 40,
        "max_model_version": 30,
        "device_selection_size": 80,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tree = provisioned(Path(tmp), job)
        edge = EdgeProcesses(tree, Path(tmp) / "job.json", free_port(), free_port())
        edge.start(timeout=180)
        try:
            tokens = Fleet.of_tree(tree).issue(f"dev-{i:05d}" for i in range(devices))
            config = SimulatorConfig(
                edge.proxy_url, "restart", NUMERIC, devices, 32, tokens=tokens, timeout=600
            )
            out: list[Summary] = []
            sim = threading.Thread(target=lambda: out.append(run_simulation(config)))
            sim.start()
            [listed] = edge.get(f"{edge.server_url}/jobs")["jobs"]
            at = edge.wait_job(listed["job_id"], 300, lambda s: s["version"] >= 5)["version"]
            killed = time.monotonic()
            edge.kill("server")
            edge.wait_job(listed["job_id"], 120, lambda s: True)
            serving = time.monotonic() - killed
            after = edge.wait_job(listed["job_id"], 120, lambda s: s["version"] > at + 1)
            moving = time.monotonic() - killed
            sim.join(timeout=600)
            final = edge.job(listed["job_id"], ids=True)
        finally:
            edge.stop()
    backoff = 0.5  # the supervisor's first pause
    print(f"\nrestart: the server SIGKILLed at version >= {at} ({load()})")
    print(
        f"  serving again after {serving:.2f} s (of which the supervisor's backoff "
        f"{backoff} s); a new version {moving:.2f} s after the kill (v{after['version']})"
    )
    print(
        f"  job {final['status']} at v{final['version']}: accepted {final['accepted']}, "
        f"unique {final['accepted_unique']}, ids {len(final['task_ids'])}; "
        f"simulation done {bool(out and out[0].done)}"
    )


def one_lcp(server: EdgeServer, name: str) -> tuple[int, int]:
    """Bytes one LCP holds for the job after its first sync, and its share of the selection
    (the devices it holds selected)."""
    wire = server.sync(SyncRequest(sender=name, boot="lcp", seq=0)).model_dump_json()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    service = LcpService(name, "https://127.0.0.1:1")
    reply = SyncReply.model_validate_json(wire)  # as it arrives: the LCP's own strings
    selected = sum(len(v) for state in reply.jobs for v in state.selected.values())
    service.apply(reply, {})
    del reply
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert service.jobs, "the LCP did not take the job"
    return used, selected


def fleet(max_enrolled: int = 1_000_000) -> None:
    """In-process: the server's memory per enrolled device (devices that asked for a task,
    candidates or selected) and its time per sync, with 10^4 .. 10^6 of them and 10^3 ..
    10^5 selected. Target: under 1 kB per enrolled device, time per sync flat in the number
    enrolled."""
    print(f"\nfleet (in-process, no HTTP; 64 LCPs; {load()})")
    print(
        f"  {'enrolled':>10} {'selected':>9} {'server B/device':>16} {'sync ms (p50)':>14} "
        f"{'one LCP (its selected devices)':>30}"
    )
    lcps = [f"lcp-{i}" for i in range(64)]
    for enrolled in (10_000, 100_000, 1_000_000):
        if enrolled > max_enrolled:
            break
        for selected in (1_000, 10_000, 100_000):
            if selected > enrolled // 2:
                break
            with tempfile.TemporaryDirectory() as tmp:
                gc.collect()
                tracemalloc.start()
                server = EdgeServer(Path(tmp))
                spec = JobSpec(
                    name="fleet",
                    client=NUMERIC,
                    options={"num_parameters": 10},
                    device_selection_size=selected,
                    num_updates_for_model=10**6,
                    max_model_version=5,
                )
                job = server.submit(spec)
                base = tracemalloc.get_traced_memory()[0]
                share = enrolled // len(lcps)
                for n, lcp in enumerate(lcps):
                    ids = [f"device-{n * share + i:08d}" for i in range(share)]
                    part = JobSync(offered={lcp: ids})
                    server.sync(SyncRequest(sender=lcp, boot="b", seq=0, jobs={job.job_id: part}))
                    del ids, part
                gc.collect()
                used = tracemalloc.get_traced_memory()[0] - base
                tracemalloc.stop()
                times = []
                for k in range(200):
                    lcp = lcps[k % len(lcps)]
                    part = JobSync(
                        known_version=0,
                        offered={lcp: [f"new-{k}"]},
                        selection_epochs={lcp: job.selector.epochs[lcp]},
                    )
                    request = SyncRequest(sender=lcp, boot="b", seq=1 + k, jobs={job.job_id: part})
                    start = time.perf_counter()
                    server.sync(request)
                    times.append(time.perf_counter() - start)
                per = used / (share * len(lcps))
                lcp_bytes, lcp_selected = one_lcp(server, lcps[0])
                print(
                    f"  {enrolled:>10,} {selected:>9,} {per:>16,.0f} "
                    f"{np.median(times) * 1e3:>14.3f} {lcp_bytes / 1024:>10,.0f} kB "
                    f"for {lcp_selected:,}"
                )
                server.close()
    print(
        "  (memory by tracemalloc: the selection's and the job's structures, the id strings "
        "included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", default="fanin,user,restart,fleet")
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--fleet-max", type=int, default=1_000_000)
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH.parent), str(BENCH), os.environ.get("PYTHONPATH", "")]
    )  # the edge processes import the bench's device class
    print(f"machine: {os.cpu_count()} cores, {load()} at the start (shared with others)")
    runs = args.runs.split(",")
    if "fanin" in runs:
        fanin()
    if "fleet" in runs:
        fleet(args.fleet_max)
    if "restart" in runs:
        restart()
    if "user" in runs:
        user_model(args.devices)
    print(f"\n{load()} at the end")


if __name__ == "__main__":
    main()
