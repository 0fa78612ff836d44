"""Simulate many edge devices against a routing proxy (asyncio, HTTP/1.1 keep-alive).

Every device enrols for its own token (or uses the one issued to it in advance: ``tokens``),
asks for the job and then for a task once, which
makes it a candidate for selection. A coordinator polls ``/selection``; each selected device
asks for its task, trains (``digits``: softmax regression on its own Dirichlet shard;
``numeric``: ``value + 1`` after a random delay up to the job's ``max_delay``), reports the
update (retrying the same task on ``RETRY`` or a lost reply) and asks again. At most
``concurrency`` requests are in flight. The run ends when the job is done; the summary has
requests per second, p50/p99 latency per route, accepted and rejected updates, versions, and
the final model's held-out accuracy.

Requests go over one pool of kept-alive connections
(:class:`redfl.edge.forward.LcpConnections`, the proxy's own lean client) on uvloop when it
is installed: httpx cost about 4 ms of CPU per request here, several times the proxy's and
the LCP's work together, so the simulator, not the deployment, set the pace.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from redfl.edge.forward import ForwardError, LcpConnections
from redfl.edge.jobs import DigitsShards, evaluate_digits, train_digits
from redfl.edge.protocol import decode_arrays, encode_arrays

__all__ = ["SimulatorConfig", "Summary", "print_summary", "run_simulation", "simulate"]


@dataclass(frozen=True)
class SimulatorConfig:
    """What to simulate: see ``redfl edge simulate --help``."""

    proxy: str
    job: str
    devices: int = 1_000
    concurrency: int = 64
    task: Literal["digits", "numeric"] = "digits"
    enroll_secret: str = ""
    seed: int = 0
    timeout: float = 600.0
    poll: float = 0.1
    tokens: dict[str, str] = field(default_factory=dict)
    """Device id -> token issued in advance; when given, the devices are these (the first
    ``devices`` of them) and none enrols."""
    ca: str | None = None
    """The CA file a device trusts for an ``https://`` proxy."""


@dataclass
class Summary:
    """Figures of one simulation."""

    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    acked: set[str] = field(default_factory=set)
    rejected: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    transport_errors: int = 0
    version: int = 0
    done: bool = False
    accuracy: float | None = None
    marks: dict[str, float] = field(default_factory=dict)
    """Seconds from the start to each phase: ``joined`` (every device enrolled and offered),
    ``first task``, ``version N`` (first seen by the coordinator) and ``done``."""

    @property
    def requests(self) -> int:
        """Requests answered."""
        return sum(len(v) for v in self.latencies.values())

    def percentile(self, route: str, q: float) -> float:
        """Latency percentile of a route in milliseconds (nan when unused)."""
        values = self.latencies.get(route)
        return float(np.percentile(values, q) * 1e3) if values else float("nan")


class _Sim:
    def __init__(self, config: SimulatorConfig, client: LcpConnections, summary: Summary):
        self.c, self.client, self.s = config, client, summary
        self.gate = asyncio.Semaphore(config.concurrency)
        # the coordinator's own connection: its polls do not queue behind the devices'
        self.control = LcpConnections(client.host, client.port, 1, client.timeout, client.ssl)
        self.control_gate = asyncio.Semaphore(1)
        if config.tokens:
            self.ids = list(config.tokens)[: config.devices]
        else:
            self.ids = [f"device-{config.seed}-{i:05d}" for i in range(config.devices)]
        self.index_of = {device: i for i, device in enumerate(self.ids)}
        self.tokens: dict[str, str] = {d: config.tokens[d] for d in self.ids if d in config.tokens}
        self.job_id = ""
        self.busy: set[str] = set()
        self.shards = (
            DigitsShards(len(self.ids), seed=config.seed) if config.task == "digits" else None
        )
        self.final: str = ""
        self.ones = ("", "")  # numeric task: the last model text and its update
        self.rng = random.Random(config.seed)
        self.start = time.perf_counter()

    async def post(
        self, route: str, device: str, body: dict[str, Any], control: bool = False
    ) -> dict[str, Any]:
        headers = {"content-type": "application/json"}
        if device in self.tokens:
            headers["authorization"] = f"Bearer {self.tokens[device]}"
        payload = json.dumps(body).encode()
        while True:
            async with self.control_gate if control else self.gate:
                start = time.perf_counter()
                client = self.control if control else self.client
                try:
                    _, content = await client.post(route, payload, headers)
                except ForwardError:
                    content = b""
                else:
                    self.s.latencies[route].append(time.perf_counter() - start)
            if not content:
                self.s.transport_errors += 1
                await asyncio.sleep(0.1)
                continue
            data: dict[str, Any] = json.loads(content)
            self.s.statuses[f"{route} {data.get('status')}"] += 1
            return data

    async def join(self, index: int) -> None:
        device = self.ids[index]
        if device not in self.tokens:
            reply = await self.post(
                "/enroll", device, {"device_id": device, "secret": self.c.enroll_secret}
            )
            if reply.get("status") != "OK":
                raise RuntimeError(f"enrolment of {device} failed: {reply.get('reason')}")
            self.tokens[device] = reply["token"]
        while not self.job_id:
            job = await self.post("/job", device, {"job_name": self.c.job})
            if job["status"] not in ("OK", "RETRY"):
                raise RuntimeError(f"job {self.c.job!r}: {job['status']} {job.get('reason')}")
            if job["status"] == "OK":
                self.job_id = job["job_id"]
            else:
                await asyncio.sleep(job.get("retry_wait") or 0.2)
        await self.post("/task", device, {"job_id": self.job_id})

    async def work(self, index: int) -> None:
        """One selected device: task, train, report (retrying the same task on RETRY), and
        ask again, which makes it a candidate once more."""
        device = self.ids[index]
        try:
            while not self.s.done:
                task = await self.post("/task", device, {"job_id": self.job_id})
                if task["status"] == "DONE":
                    self.finish(task)
                if task["status"] != "OK":
                    return
                self.mark("first task")
                delta, n = await self.train(index, task)
                body = {"job_id": self.job_id, "task_id": task["task_id"], "parameters": delta,
                        "num_samples": n}  # fmt: skip
                for _ in range(20):
                    result = await self.post("/result", device, body)
                    if result["status"] != "RETRY":
                        break
                if result["status"] == "OK":
                    self.s.acked.add(task["task_id"])
                else:
                    self.s.rejected[str(result.get("reason", "")).split(":")[0]] += 1
        finally:
            self.busy.discard(device)

    async def train(self, index: int, task: dict[str, Any]) -> tuple[str, int]:
        config = task["config"]
        if self.shards is None:  # numeric: the update is all ones, the same for every device
            await asyncio.sleep(self.rng.uniform(0.0, float(config.get("max_delay", 0.0))))
            if self.ones[0] != task["parameters"]:
                ones = {k: np.ones_like(v) for k, v in decode_arrays(task["parameters"]).items()}
                self.ones = (task["parameters"], encode_arrays(ones))
            return self.ones[1], 1
        params = decode_arrays(task["parameters"])
        x, y = self.shards.shard(index)
        seed = zlib.crc32(f"{self.c.seed}/{index}/{task['task_id']}".encode())
        return encode_arrays(train_digits(params, x, y, config, seed)), len(y)

    def mark(self, name: str) -> None:
        self.s.marks.setdefault(name, time.perf_counter() - self.start)

    def finish(self, task: dict[str, Any]) -> None:
        self.mark("done")
        self.s.done = True
        self.s.version = max(self.s.version, int(task.get("model_version", 0)))
        self.final = task.get("parameters") or self.final

    async def coordinate(self, progress: Progress | None) -> None:
        bar = progress.add_task("versions", total=None, detail="") if progress else None
        deadline = time.monotonic() + self.c.timeout
        workers: set[asyncio.Task[None]] = set()
        while not self.s.done and time.monotonic() < deadline:
            sel = await self.post("/selection", self.ids[0], {"job_id": self.job_id}, True)
            self.s.version = max(self.s.version, int(sel.get("model_version", 0)))
            self.mark(f"version {self.s.version}")
            if sel.get("done"):
                self.mark("done")
                self.s.done = True
            for device in sel.get("selected", []):
                if device in self.index_of and device not in self.busy:
                    self.busy.add(device)
                    worker = asyncio.create_task(self.work(self.index_of[device]))
                    workers.add(worker)
                    worker.add_done_callback(workers.discard)
            if progress is not None and bar is not None:
                detail = f"accepted {len(self.s.acked)}  requests {self.s.requests}"
                progress.update(bar, completed=self.s.version, detail=detail)
            await asyncio.sleep(self.c.poll)
        if workers:
            await asyncio.wait(workers, timeout=10.0)
        if self.s.done and not self.final:  # ask once more for the final model
            task = await self.post("/task", self.ids[0], {"job_id": self.job_id})
            if task["status"] == "DONE":
                self.finish(task)


async def simulate(config: SimulatorConfig, progress: bool = False) -> Summary:
    """Run the simulation and return its summary."""
    summary = Summary()
    url = urlsplit(config.proxy)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"proxy must be an http(s)://host:port URL, got {config.proxy!r}")
    tls = None
    if url.scheme == "https":
        tls = ssl.create_default_context(cafile=config.ca)  # what a device trusts
    port = url.port or (443 if tls else 80)
    client = LcpConnections(url.hostname, port, config.concurrency, timeout=60.0, ssl=tls)
    sim = _Sim(config, client, summary)
    try:
        start = sim.start = time.perf_counter()
        columns = (
            TextColumn("version {task.completed}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
            await asyncio.gather(*(sim.join(i) for i in range(len(sim.ids))))
            sim.mark("joined")
            await sim.coordinate(bar if progress else None)
        summary.seconds = time.perf_counter() - start
        if sim.final and config.task == "digits":
            summary.accuracy = evaluate_digits(decode_arrays(sim.final))
    finally:
        client.close()
        sim.control.close()
    return summary


def run_simulation(config: SimulatorConfig, progress: bool = False) -> Summary:
    """:func:`simulate` in a fresh event loop (uvloop's when it is installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(simulate(config, progress))
    return uvloop.run(simulate(config, progress))


def print_summary(summary: Summary, console: Console | None = None) -> None:
    """Print the summary as a table."""
    console = console or Console()
    table = Table(title="edge simulation", show_header=True)
    table.add_column("route")
    for name in ("requests", "p50 ms", "p99 ms"):
        table.add_column(name, justify="right")
    for route in sorted(summary.latencies):
        p50, p99 = summary.percentile(route, 50), summary.percentile(route, 99)
        table.add_row(route, str(len(summary.latencies[route])), f"{p50:.1f}", f"{p99:.1f}")
    console.print(table)
    rps = summary.requests / summary.seconds if summary.seconds else 0.0
    accuracy = "-" if summary.accuracy is None else f"{summary.accuracy:.3f}"
    console.print(
        f"{summary.requests} requests in {summary.seconds:.1f} s ({rps:.0f} req/s); "
        f"updates accepted {len(summary.acked)}, rejected {sum(summary.rejected.values())} "
        f"{dict(summary.rejected)}; versions {summary.version}; done {summary.done}; "
        f"final accuracy {accuracy}; transport errors {summary.transport_errors}"
    )
