"""Serving the digits model: ``redfl model serve`` on Ray Serve against a plain FastAPI app.

Workload: a digits softmax model trained here (local runtime, 10 clients, 5 rounds) is
served by ``redfl model serve`` (its own embedded Ray instance, one process tree) with 1 and
then 2 replicas (``--replica-cpus`` each, batches of up to ``--max-batch`` requests
gathered for at most ``--batch-wait`` s), and by the baseline: one uvicorn process with a
plain FastAPI endpoint that parses the same body with pydantic and calls the same numpy
``predict`` (no token, no batching). A closed-loop load generator (asyncio + aiohttp, kept
alive connections, ``--concurrency`` requests in flight) sends ``POST /predict`` with 1 and
with 32 rows of digits per request for ``--seconds`` s each (after a 2 s warm-up).

Figures per configuration: requests/s and rows/s, latency p50/p99, errors, the ratio of
requests/s to the FastAPI baseline at the same batch, the server's CPU per request (all
processes of the server's tree: Ray Serve's proxy, the replicas, Ray's own daemons) and the
load generator's CPU (per request, and in percent of one core: on 2 shared cores it competes
with the server). The load average is printed beside each line.

Run: ``python bench/serving.py`` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy
import psutil
from common import REPO, machine

from redfl.data.digits import load_digits_arrays
from redfl.run.api import run
from redfl.runtime.jobs import free_port

# The baseline: a plain FastAPI app serving argv[1]'s model on port argv[2] in one process.
BASELINE = """import sys
import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from redfl.run.serving import load_run

served = load_run(sys.argv[1])
app = FastAPI()

class Body(BaseModel):
    inputs: list[list[float]]

@app.post("/predict")
def predict(body: Body) -> dict[str, list[list[float]]]:
    outputs = served.predictor(served.parameters, np.asarray(body.inputs))
    return {"outputs": outputs.tolist()}

@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


@dataclass
class Result:
    """One configuration's figures."""

    server: str
    replicas: int
    rows: int
    latencies: list[float]
    errors: int
    seconds: float
    server_cpu: dict[str, float]
    """CPU seconds of the server's processes, by kind."""
    client_cpu: float
    load: float

    def rate(self) -> float:
        """Requests per second."""
        return len(self.latencies) / self.seconds


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def tree_cpu(root: psutil.Process) -> dict[str, float]:
    """CPU seconds (user + system) of ``root`` and every process under it now, by kind (a
    Ray worker's ``ray::<actor>``, else the process name)."""
    kinds: dict[str, float] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            command = process.cmdline()
            kind = command[0].split(" ")[0] if command and command[0].startswith("ray::") else ""
            kind = kind or process.name()
        except psutil.Error:
            continue
        kinds[kind] = kinds.get(kind, 0.0) + times.user + times.system
    return kinds


async def closed_loop(
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
    cpu: Callable[[], tuple[dict[str, float], float]],
) -> tuple[list[float], int, dict[str, float], float]:
    """``concurrency`` workers each sending the next body as soon as the last answer came;
    the latencies (s) of the answers within ``seconds`` (after a warm-up), the count of
    failed ones, and the CPU seconds of server and load generator meanwhile (from
    ``cpu()``, read as the measured phase starts and ends)."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {**headers, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker(index: int, until: float) -> None:
            nonlocal errors
            turn = index
            while time.monotonic() < until:
                body = bodies[turn % len(bodies)]
                turn += concurrency
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += 0 if ok else 1

        warm = time.monotonic() + 2.0
        await asyncio.gather(*(worker(i, warm) for i in range(concurrency)))
        latencies.clear()
        errors = 0
        server_before, client_before = cpu()
        until = time.monotonic() + seconds
        await asyncio.gather(*(worker(i, until) for i in range(concurrency)))
        server_after, client_after = cpu()
    server = {k: v - server_before.get(k, 0.0) for k, v in server_after.items()}
    return latencies, errors, server, client_after - client_before


def measure(
    server: str,
    replicas: int,
    url: str,
    headers: dict[str, str],
    root: psutil.Process,
    rows: int,
    args: argparse.Namespace,
) -> Result:
    """One configuration under the closed loop."""
    x, _ = load_digits_arrays()
    bodies = [
        json.dumps({"inputs": x[i * 50 : i * 50 + rows].tolist()}).encode() for i in range(32)
    ]
    latencies, errors, server_cpu, client_cpu = asyncio.run(
        closed_loop(
            url,
            bodies,
            headers,
            args.concurrency,
            args.seconds,
            lambda: (tree_cpu(root), time.process_time()),
        )
    )
    return Result(
        server,
        replicas,
        rows,
        latencies,
        errors,
        args.seconds,
        server_cpu,
        client_cpu,
        load_average(),
    )


def wait_healthy(url: str, headers: dict[str, str], process: subprocess.Popen[str]) -> None:
    """Wait until ``GET url`` answers 200."""
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server ended with code {process.returncode}")
        try:
            if httpx.get(url, headers=headers, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within 120 s")


def serve_ray(folder: Path, replicas: int, args: argparse.Namespace) -> list[Result]:
    """``redfl model serve`` with ``replicas`` replicas, under each batch size."""
    home, port = Path(tempfile.mkdtemp(prefix="redfl-serving-")), free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "redfl.cli", "model", "serve", str(folder)]
    options = ["--name", "bench", "--home", str(home), "--port", str(port)]
    options += ["--replicas", str(replicas), "--replica-cpus", str(args.replica_cpus)]
    options += ["--max-batch", str(args.max_batch), "--batch-wait", str(args.batch_wait)]
    process = subprocess.Popen(
        [*command, *options], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("serving until"):
                break
        token = lines[lines.index(next(s for s in lines if s.startswith("token (shown"))) + 1]
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}/bench"
        wait_healthy(f"{base}/health", headers, process)
        root = psutil.Process(process.pid)
        return [
            measure("ray serve", replicas, f"{base}/predict", headers, root, rows, args)
            for rows in (1, 32)
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_fastapi(folder: Path, args: argparse.Namespace) -> list[Result]:
    """The baseline: a plain FastAPI app in one process, under each batch size."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", BASELINE, str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(f"{base}/health", {}, process)
        root = psutil.Process(process.pid)
        return [measure("fastapi", 1, f"{base}/predict", {}, root, rows, args) for rows in (1, 32)]
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    """Train, serve each way, load each configuration and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--batch-wait", type=float, default=0.002)
    parser.add_argument("--replica-cpus", type=float, default=1.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="redfl-serving-run-")) / "digits"
    config = {
        "federation": {"rounds": 5, "runtime": "local"},
        "client": {"target": "redfl.examples.digits:DigitsClient", "num_clients": 10},
    }
    run(config, out=folder)
    results = serve_fastapi(folder, args)
    for replicas in (1, 2):
        results += serve_ray(folder, replicas, args)
    baseline = {r.rows: r.rate() for r in results if r.server == "fastapi"}
    print(machine())
    print(
        f"serving bench: digits softmax, {args.concurrency} requests in flight, "
        f"{args.seconds:g} s a configuration; Ray Serve batches up to {args.max_batch} "
        f"requests (wait {args.batch_wait * 1000:g} ms), {args.replica_cpus:g} CPU a replica"
    )
    header = (
        f"{'server':<10} {'replicas':>8} {'rows':>4} {'req/s':>7} {'rows/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'vs fastapi':>10} "
        f"{'server ms CPU/req':>17} {'loadgen ms CPU/req':>18} {'loadgen CPU':>11} {'load':>5}"
    )
    print(header)
    for r in results:
        p50, p99 = numpy.percentile([x * 1000 for x in r.latencies], [50, 99])
        done = max(1, len(r.latencies))
        server_ms = sum(r.server_cpu.values()) / done * 1000
        print(
            f"{r.server:<10} {r.replicas:>8} {r.rows:>4} {r.rate():>7.0f} "
            f"{r.rate() * r.rows:>8.0f} {p50:>7.1f} {p99:>7.1f} {r.errors:>6} "
            f"{r.rate() / baseline[r.rows]:>9.2f}x {server_ms:>17.2f} "
            f"{r.client_cpu / done * 1000:>18.2f} {r.client_cpu / r.seconds * 100:>10.0f}% "
            f"{r.load:>5.1f}"
        )
    print("server CPU ms per request by process (the largest; Ray Serve with 32 rows):")
    for r in results:
        if r.server == "ray serve" and r.rows == 32:
            done = max(1, len(r.latencies))
            largest = sorted(r.server_cpu.items(), key=lambda kv: -kv[1])[:6]
            parts = ", ".join(f"{kind} {seconds / done * 1000:.2f}" for kind, seconds in largest)
            print(f"  {r.replicas} replica(s): {parts}")


if __name__ == "__main__":
    main()
