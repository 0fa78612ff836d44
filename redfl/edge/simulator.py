"""Simulate many edge devices running the user's own device class against a routing proxy
(asyncio, HTTP/1.1 keep-alive).

Every device enrols for its own token (or uses the one issued to it in advance: ``tokens``),
asks for the job and checks that it runs the simulated class (a job of another class is an
error, :class:`redfl.edge.device.JobMismatch`, not a silent spin), then asks for a task once,
which makes it a candidate for selection. A coordinator polls ``/selection``; each selected
device asks for its task, runs the class's ``fit`` on it (the class built once per device
exactly as :func:`redfl.edge.device.run` builds it, its place in the fleet given by its
index; optionally after a random pause up to ``delay`` seconds, a device's own time), reports
the update (retrying the same task on ``RETRY`` or a lost reply) and asks again. At most
``concurrency`` requests are in flight. The run ends when the job ends, or at ``timeout``
(also when the proxy cannot be reached: the summary then says why); the summary has requests
per second, p50/p99 latency per route, accepted, rejected and failed updates, and the last
version.

``fit`` runs in the simulator's event loop, one device at a time (the devices' training
shares this process's CPU; use ``delay`` to simulate devices' own time). Requests go over one
pool of kept-alive connections (:class:`redfl.edge.forward.LcpConnections`, the proxy's own
lean client) on uvloop when it is installed: httpx cost about 4 ms of CPU per request here,
several times the proxy's and the LCP's work together, so the simulator, not the deployment,
set the pace.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from redfl.edge.device import (
    DeviceError,
    ProxyClient,
    Trainer,
    check_job,
    client_name,
)
from redfl.edge.protocol import JobReply
from redfl.run.build import client_class

__all__ = ["SimulatorConfig", "Summary", "print_summary", "run_simulation", "simulate"]


@dataclass(frozen=True)
class SimulatorConfig:
    """What to simulate: see ``redfl edge simulate --help``."""

    proxy: str
    job: str
    client: str | type[Any]
    """The device class (or ``MODULE:CLASS``): the class the job runs."""
    devices: int = 1_000
    concurrency: int = 64
    enroll_secret: str = ""
    seed: int = 0
    timeout: float = 600.0
    poll: float = 0.1
    tokens: dict[str, str] = field(default_factory=dict)
    """Device id -> token issued in advance; when given, the devices are these (the first
    ``devices`` of them) and none enrols."""
    ca: str | None = None
    """The CA file a device trusts for an ``https://`` proxy."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The devices' own options, over the job's."""
    delay: float = 0.0
    """Each device waits a random time up to this many seconds before it reports."""


@dataclass
class Summary:
    """Figures of one simulation."""

    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    acked: set[str] = field(default_factory=set)
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    transport_errors: int = 0
    version: int = 0
    done: bool = False
    error: str = ""
    """Why the simulation stopped before the job ended (empty when it did not)."""
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
    def __init__(self, config: SimulatorConfig, client: ProxyClient, summary: Summary):
        self.c, self.client, self.s = config, client, summary
        self.gate = asyncio.Semaphore(config.concurrency)
        # the coordinator's own connection: its polls do not queue behind the devices'
        self.control = client.fork()
        self.control_gate = asyncio.Semaphore(1)
        if config.tokens:
            self.ids = list(config.tokens)[: config.devices]
        else:
            self.ids = [f"device-{config.seed}-{i:05d}" for i in range(config.devices)]
        self.index_of = {device: i for i, device in enumerate(self.ids)}
        self.tokens: dict[str, str] = {d: config.tokens[d] for d in self.ids if d in config.tokens}
        self.name = client_name(config.client)
        self.template = (
            client_class(config.client, "client")
            if isinstance(config.client, str)
            else config.client
        )
        self.job: JobReply | None = None
        self.trainers: dict[str, Trainer] = {}
        self.models: dict[int, tuple[str, dict[str, np.ndarray]]] = {}
        self.busy: set[str] = set()
        self.rng = random.Random(config.seed)
        self.start = time.perf_counter()
        self.deadline = time.monotonic() + config.timeout

    async def post(
        self, route: str, device: str, body: dict[str, Any], control: bool = False
    ) -> dict[str, Any]:
        async with self.control_gate if control else self.gate:
            start = time.perf_counter()
            client = self.control if control else self.client
            status, data = await client.post(
                route, body, self.tokens.get(device, ""), self.deadline
            )
            self.s.latencies[route].append(time.perf_counter() - start)
        self.s.statuses[f"{route} {data.get('status')}"] += 1
        if status in (400, 401, 413):
            raise DeviceError(f"{route} refused for {device} ({status}): {data.get('reason')}")
        return data

    async def join(self, index: int) -> None:
        device = self.ids[index]
        if device not in self.tokens:
            reply = await self.post(
                "/enroll", device, {"device_id": device, "secret": self.c.enroll_secret}
            )
            if reply.get("status") != "OK":
                raise DeviceError(f"enrolment of {device} failed: {reply.get('reason')}")
            self.tokens[device] = reply["token"]
        while self.job is None:
            job = JobReply.model_validate(await self.post("/job", device, {"job_name": self.c.job}))
            if job.status == "OK":
                check_job(job, self.name)
                self.job = job
            elif job.status in ("RETRY", "NO_JOB"):
                await self.pause(job.retry_wait or 0.2)
            else:
                raise DeviceError(f"job {self.c.job!r}: {job.status} {job.reason}")
        await self.post("/task", device, {"job_id": self.job.job_id})

    async def pause(self, seconds: float) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeviceError(f"job {self.c.job!r}: gave up at the timeout ({self.c.timeout:g} s)")
        await asyncio.sleep(min(seconds, left))

    def trainer(self, device: str) -> Trainer:
        trainer = self.trainers.get(device)
        if trainer is None:
            assert self.job is not None
            trainer = self.trainers[device] = Trainer(
                self.template,
                self.job,
                device,
                self.c.options,
                self.index_of[device],
                len(self.ids),
                self.models,
            )
        return trainer

    async def work(self, device: str) -> None:
        """One selected device: task, train, report (retrying the same task on RETRY), and
        ask again, which makes it a candidate once more."""
        assert self.job is not None
        job_id = self.job.job_id
        try:
            while not self.s.done:
                task = await self.post("/task", device, {"job_id": job_id})
                if task["status"] == "DONE":
                    self.finish(task)
                if task["status"] != "OK":
                    return
                self.mark("first task")
                if self.c.delay:
                    await asyncio.sleep(self.rng.uniform(0.0, self.c.delay))
                body = self.trainer(device).train(task)
                body["job_id"] = job_id
                for _ in range(20):
                    result = await self.post("/result", device, body)
                    if result["status"] != "RETRY":
                        break
                if "error" in body:
                    self.s.failed[str(body["error"]).split(":")[0]] += 1
                elif result["status"] == "OK":
                    self.s.acked.add(task["task_id"])
                else:
                    self.s.rejected[str(result.get("reason", "")).split(":")[0]] += 1
        finally:
            self.busy.discard(device)

    def mark(self, name: str) -> None:
        self.s.marks.setdefault(name, time.perf_counter() - self.start)

    def finish(self, task: dict[str, Any]) -> None:
        self.mark("done")
        self.s.done = True
        self.s.version = max(self.s.version, int(task.get("model_version", 0)))

    async def coordinate(self, progress: Progress | None) -> None:
        assert self.job is not None
        bar = progress.add_task("versions", total=None, detail="") if progress else None
        workers: set[asyncio.Task[None]] = set()
        try:
            while not self.s.done:
                sel = await self.post("/selection", self.ids[0], {"job_id": self.job.job_id}, True)
                self.s.version = max(self.s.version, int(sel.get("model_version", 0)))
                self.mark(f"version {self.s.version}")
                if sel.get("done"):
                    self.mark("done")
                    self.s.done = True
                for device in sel.get("selected", []):
                    if device in self.index_of and device not in self.busy:
                        self.busy.add(device)
                        worker = asyncio.create_task(self.work(device))
                        workers.add(worker)
                        worker.add_done_callback(workers.discard)
                if progress is not None and bar is not None:
                    detail = f"accepted {len(self.s.acked)}  requests {self.s.requests}"
                    progress.update(bar, completed=self.s.version, detail=detail)
                await self.pause(self.c.poll)
        finally:
            if workers:
                await asyncio.wait(workers, timeout=10.0)
                for worker in workers:
                    worker.cancel()


async def simulate(config: SimulatorConfig, progress: bool = False) -> Summary:
    """Run the simulation and return its summary (its ``error`` says why it stopped early).

    Raises
    ------
    JobMismatch
        If the job runs another device class than the simulated one.
    ValueError
        For a proxy URL that is not ``http(s)://host:port``.
    """
    summary = Summary()
    client = ProxyClient(config.proxy, config.ca, config.concurrency)
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
            try:
                await asyncio.gather(*(sim.join(i) for i in range(len(sim.ids))))
                sim.mark("joined")
                await sim.coordinate(bar if progress else None)
            except DeviceError as exc:
                if type(exc) is not DeviceError:
                    raise  # a job of another class: the caller's error
                summary.error = str(exc)
        summary.seconds = time.perf_counter() - start
    finally:
        summary.transport_errors = client.transport_errors + sim.control.transport_errors
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
    console.print(
        f"{summary.requests} requests in {summary.seconds:.1f} s ({rps:.0f} req/s); "
        f"updates accepted {len(summary.acked)}, rejected {sum(summary.rejected.values())} "
        f"{dict(summary.rejected)}, failed {sum(summary.failed.values())} "
        f"{dict(summary.failed)}; versions {summary.version}; done {summary.done}; "
        f"transport errors {summary.transport_errors}"
    )
    if summary.error:
        console.print(f"stopped early: {summary.error}")
