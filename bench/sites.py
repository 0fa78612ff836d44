"""Sites: rounds over mutual TLS against the same clients on Ray, a thousand participants on
one server, and how long a killed site takes to rejoin.

- (a) 10 site processes (``redfl site run``), echo clients, 10,000 float32 parameters, 20
  rounds (FedAvg, everyone sampled): the median round with ``runtime = "sites"`` against
  ``runtime = "ray"`` with the same clients, one worker each (0.1 CPU). Target: at most
  1.5 x the Ray round + 20 ms.
- (b) 1,000 participants driven from one load process through the site API (asyncio and
  httpx, one TLS connection each; a participant polls, answers with the parameters it got,
  polls again): the median of 5 rounds and the server's peak RSS. Targets: < 2 s, < 1 GB.
- (c) a site SIGKILLed in a running federation and restarted at once: seconds from the kill
  to the server seeing it join again (its new process's start-up included), 5 times.

The load average is printed beside each figure. Run: ``python bench/sites.py [a|b|c ...]``
(all by default; a few minutes on 2 cores, most of it issuing the 1,000 credentials).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from common import REPO, machine

from redfl import StarFederation
from redfl.algorithms.fedavg import FedAvg
from redfl.core.events import Event, SiteJoined, SiteLeft
from redfl.examples.echo import EchoClient
from redfl.runtime.connect import ensure_ray
from redfl.runtime.resources import ResourcesConfig
from redfl.runtime.sites.admin import issue_site
from redfl.runtime.sites.config import SitesConfig
from redfl.runtime.sites.wire import FitReply, read_task, reply_frame
from redfl.schemas.callbacks import Callback
from redfl.trust import Bundle, TrustHome, client_context

SIZE = 10_000
ECHO = "redfl.examples.echo:EchoClient"
JOIN_SPACING_S = 0.005
"""Seconds between two participants' joins in (b) (a thousand joins take 5 s)."""


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def provision(folder: Path, names: list[str]) -> tuple[TrustHome, int]:
    """A home and a credential per name in ``folder/<name>/credentials.json``."""
    home = TrustHome.init(folder / "fed-home")
    port = free_port()
    for name in names:
        (folder / name).mkdir(parents=True)
        issue_site(home, name, f"https://127.0.0.1:{port}").write(
            folder / name / "credentials.json"
        )
    return home, port


def table(home: TrustHome, port: int, names: list[str]) -> SitesConfig:
    listen = f"127.0.0.1:{port}"
    return SitesConfig(home=str(home.path), listen=listen, expected=names, join_timeout=600)


def site_process(
    folder: Path, name: str, stay: bool = True, client: str = ECHO
) -> subprocess.Popen[bytes]:
    """``redfl site run`` of ``client`` (``SIZE`` parameters) for site ``name``."""
    (folder / name / "options.toml").write_text(f"size = {SIZE}\n")
    command = [sys.executable, "-m", "redfl.cli", "site", "run", "--client", client]
    command += ["--credentials", str(folder / name / "credentials.json")]
    command += ["--options", str(folder / name / "options.toml"), "--workdir", str(folder / name)]
    if stay:
        command.append("--stay")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (folder / name / "site.log").open("ab")
    return subprocess.Popen(command, stdout=log, stderr=log, env=env)


def echo_federation(names: list[str], **settings: Any) -> StarFederation:
    return StarFederation(
        EchoClient,
        len(names),
        initial_parameters=EchoClient.initial_parameters(SIZE),
        options={"size": SIZE},
        client_ids=names,
        strategy=FedAvg(),
        **settings,
    )


def median_round(federation: StarFederation, rounds: int) -> float:
    """The median of the rounds' own seconds (workers or sites started before)."""
    history = federation.train(rounds).history
    return statistics.median(record.seconds for record in history[-rounds:])


# -- (a) ---------------------------------------------------------------------------------
def part_a(folder: Path, count: int = 10, rounds: int = 20) -> None:
    names = [f"site-{i:02d}" for i in range(count)]
    home, port = provision(folder, names)
    sites = [site_process(folder, name) for name in names]
    try:
        with echo_federation(names, runtime="sites", sites=table(home, port, names)) as federation:
            federation.train(1)  # every site joined, its client built
            at_sites = median_round(federation, rounds)
        print(
            f"(a) sites: median round {at_sites * 1000:.1f} ms over {rounds} rounds "
            f"({count} site processes, {SIZE} float32); {load()}"
        )
    finally:
        for site in sites:
            site.kill()
    ensure_ray(None)
    resources = ResourcesConfig(num_workers=count, worker={"CPU": 0.1})
    with echo_federation(names, runtime="ray", resources=resources) as federation:
        federation.train(1)
        on_ray = median_round(federation, rounds)
    target = 1.5 * on_ray + 0.020
    print(f"(a) ray:   median round {on_ray * 1000:.1f} ms ({count} workers); {load()}")
    print(
        f"(a) sites / ray = {at_sites / on_ray:.2f}; target <= 1.5 x ray + 20 ms = "
        f"{target * 1000:.1f} ms: {'met' if at_sites <= target else 'MISSED'} "
        f"(sites at {at_sites / target:.2f} of the target)"
    )


# -- (b) ---------------------------------------------------------------------------------
def part_b(folder: Path, count: int = 1000, rounds: int = 5) -> None:
    names = [f"p-{i:04d}" for i in range(count)]
    started = time.perf_counter()
    home, port = provision(folder, names)
    print(f"(b) issued {count} credentials in {time.perf_counter() - started:.1f} s; {load()}")
    command = [sys.executable, __file__, "load", str(folder), str(port), *names]
    driver = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(REPO)})
    server = psutil.Process()
    peak = [server.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], server.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    try:
        with echo_federation(names, runtime="sites", sites=table(home, port, names)) as federation:
            joined = time.perf_counter()
            federation.train(1)
            print(f"(b) all {count} joined and ran round 1 in {time.perf_counter() - joined:.1f} s")
            cpu = [sum(p.cpu_times()[:2]) for p in (server, psutil.Process(driver.pid))]
            seconds = median_round(federation, rounds)
            used = [sum(p.cpu_times()[:2]) for p in (server, psutil.Process(driver.pid))]
    finally:
        stop.set()
        driver.wait(60)
    peak_mb = peak[0] / 2**20
    per_round = [(after - before) / rounds for before, after in zip(cpu, used, strict=True)]
    print(f"(b) CPU seconds per round: server {per_round[0]:.2f}, load process {per_round[1]:.2f}")
    print(
        f"(b) median round {seconds:.2f} s over {rounds} rounds ({count} participants, "
        f"{SIZE} float32); target < 2 s: {'met' if seconds < 2 else 'MISSED'} "
        f"({seconds / 2:.2f} of it); {load()}"
    )
    print(
        f"(b) server peak RSS {peak_mb:.0f} MB; target < 1024 MB: "
        f"{'met' if peak_mb < 1024 else 'MISSED'} ({peak_mb / 1024:.2f} of it); {load()}"
    )


def run_load(folder: Path, port: int, names: list[str]) -> None:
    """The load process: every participant joins, then polls and echoes until the run ends.

    Each participant is a coroutine with one TLS connection of its own (its credential)
    speaking HTTP/1.1 by hand: a general HTTP client costs more CPU per request than the
    server does, and the load shares the machine with it.
    """

    async def request(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: str,
        body: bytes = b"",
    ) -> tuple[int, bytes]:
        writer.write(f"{head}\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        size = next(
            int(v)
            for k, _, v in (h.partition(": ") for h in lines)
            if k.lower() == "content-length"
        )
        return int(lines[0].split()[1]), await reader.readexactly(size)

    async def participant(index: int, name: str) -> None:
        context = client_context(Bundle.load(folder / name / "credentials.json"))
        await asyncio.sleep(index * JOIN_SPACING_S)  # joins spread out: no handshake storm
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
                )
                status, body = await request(reader, writer, "POST /v1/join HTTP/1.1", b'{"v": 1}')
            except (OSError, asyncio.IncompleteReadError):
                status = 0
            if status == 200:
                break
            await asyncio.sleep(0.5)
        session = json.loads(body)["session"]
        while True:
            status, body = await request(
                reader, writer, f"GET /v1/work HTTP/1.1\r\nX-Redfl-Session: {session}"
            )
            if status == 204:
                continue
            if status != 200:
                writer.close()
                return
            task = read_task(body)
            reply = reply_frame(FitReply(task.job, True, dict(task.parameters), 1))
            head = (
                f"POST /v1/reply HTTP/1.1\r\nX-Redfl-Session: {session}\r\nX-Redfl-Job: {task.job}"
            )
            await request(reader, writer, head, reply)

    async def everyone() -> None:
        await asyncio.gather(
            *(participant(i, name) for i, name in enumerate(names)), return_exceptions=True
        )

    asyncio.run(everyone())


# -- (c) ---------------------------------------------------------------------------------
class Joins(Callback):
    """When each site joined, and when each left."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.left: dict[str, list[float]] = {}

    def on_event(self, event: Event) -> bool | None:
        if isinstance(event, SiteJoined):
            self.times.setdefault(event.site, []).append(time.monotonic())
        elif isinstance(event, SiteLeft):
            self.left.setdefault(event.site, []).append(time.monotonic())
        return None


def part_c(folder: Path, times: int = 5) -> None:
    names = ["site-a", "site-b", "site-c"]
    home, port = provision(folder, names)
    sites = [site_process(folder, name) for name in names]
    joins = Joins()
    federation = echo_federation(
        names,
        runtime="sites",
        sites=table(home, port, names),
        callbacks=[joins],
    )
    federation.strategy = FedAvg(min_fit_clients=2)
    done = threading.Event()

    def train() -> None:
        while not done.is_set():
            federation.train(1)

    runner = threading.Thread(target=train, daemon=True)
    runner.start()
    seconds: list[float] = []
    gone: list[float] = []
    try:
        deadline = time.monotonic() + 300
        while len(joins.times.get("site-b", [])) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(times):
            before = len(joins.times["site-b"])
            killed = time.monotonic()
            sites[1].send_signal(signal.SIGKILL)
            sites[1].wait(30)
            sites[1] = site_process(folder, "site-b")
            while len(joins.times["site-b"]) == before and time.monotonic() < deadline:
                time.sleep(0.01)
            seconds.append(joins.times["site-b"][-1] - killed)
            gone.append(joins.left["site-b"][-1] - killed)
            time.sleep(1.0)
    finally:
        done.set()
        runner.join(60)
        federation.stop()
        for site in sites:
            site.kill()
    text = ", ".join(f"{s:.2f}" for s in seconds)
    print(
        f"(c) SIGKILL to rejoined (a new process started at once): median "
        f"{statistics.median(seconds):.2f} s ({text}); the old session ended after "
        f"{statistics.median(gone):.2f} s (median); {load()}"
    )


def main(argv: list[str]) -> None:
    if argv[:1] == ["load"]:
        run_load(Path(argv[1]), int(argv[2]), argv[3:])
        return
    parts = argv or ["a", "b", "c"]
    print(machine())
    for part, step in (("a", part_a), ("b", part_b), ("c", part_c)):
        if part in parts:
            with tempfile.TemporaryDirectory() as folder:
                step(Path(folder))


if __name__ == "__main__":
    main(sys.argv[1:])
