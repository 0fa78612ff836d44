"""The platform under load: API latency with 50 concurrent users, WebSocket latency, memory;
20 users while a run trains on the same machine; two replicas on one PostgreSQL database.

Workload: a real ``redfl serve`` (SQLite in a temp data folder, embedded Ray head) holding
``--stored`` finished runs of 20 rounds each. Phase 1: ``--users`` concurrent users (asyncio
+ httpx, one shared access token) alternate ``GET /api/runs`` and ``GET
/api/runs/{id}/metrics.json`` of a random run for ``--seconds`` seconds; p50/p95/p99
latency and errors (target: p95 < 50 ms, 0 errors). It runs once per ``--think`` value: a
user's mean pause between requests (0: a closed loop, which measures the server's
saturation: latency = users / throughput; 1 s: users who read what they get). Phase 2: a
subscriber follows a run of the bundled digits example (``--rounds`` rounds) over the
WebSocket; the latency of each round is the time the subscriber received
``round_finished`` minus the event's ``time`` in the run folder's ``events.jsonl`` (target
< 250 ms). The server's resident memory is read after each phase. Figures depend on the
machine's load (2 shared cores here; the load average is printed beside every figure).

Phase 3 (``--train-users``, default 20, closed loop, ``--train-seconds`` each): on a server of
its own, the users' latency with nothing running, then while a digits run trains on the
embedded Ray head (100 clients, tiled data: both cores busy); target p95 < 200 ms. The run is
stopped afterwards (``POST /api/runs/{id}/stop``). ``--ray-nice`` is the head's priority
(the ``ray_nice`` setting; ``--compare-nice`` measures 0 too). Phase 4 (``--replicas``): one
``redfl serve`` on a PostgreSQL database (started like the tests start it), then two on it
sharing the users (half each), same workload; the ratio of their p95.

First ``--cost`` sequential requests of the mix give the server's CPU time per request:
less sensitive to the load than latency, and what bounds a closed loop (each phase also
prints the CPU per request of server and load generator). ``--compare REF``: only that cost,
for git revision ``REF`` (a temporary worktree) and this tree, alternating ``--repeats``
times (best of each); both serve the app without executing runs.

Run from another folder: ``python bench/platform_load.py`` (about 6 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy
import psutil
from common import REPO, baseline_tree
from websockets.asyncio.client import connect

sys.path.insert(0, str(REPO / "tests"))
from pg_server import create_database, running_postgres

from redfl.platform.catalog import examples
from redfl.platform.db import make_engine, session_factory, upgrade
from redfl.platform.settings import Settings
from redfl.platform.store import Store, new_run_id
from redfl.runtime.jobs import free_port, read_head, stop_head

REDFL = str(Path(sys.executable).parent / "redfl")
PASSWORD = "bench password 1"
TARGET_P95_MS = 50.0
TRAIN_TARGET_P95_MS = 200.0
# Serves the app of the tree in argv[1] (data argv[2], port argv[3]) without executing runs.
APP_ONLY = """import sys; sys.path.insert(0, sys.argv[1]); import uvicorn
from redfl.platform.api.app import create_app
from redfl.platform.logs import configure_logging
from redfl.platform.settings import Settings
configure_logging()
app = create_app(Settings(data_dir=sys.argv[2]), execute=False)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_config=None, access_log=False)
"""


def seed_runs(data: Path, count: int, url: str | None = None) -> None:
    """Store ``count`` succeeded runs of 20 rounds each (owned by ``ada``)."""
    engine = make_engine(url or Settings(data_dir=data).url)
    upgrade(engine)
    with session_factory(engine)() as session:
        store = Store(session)
        owner = store.require_user("ada").id
        for _ in range(count):
            run_id = new_run_id()
            folder = str(data / "runs" / run_id)
            store.create_run(
                run_id=run_id,
                name="seeded",
                owner_id=owner,
                project_id=None,
                config_text="",
                config_format="toml",
                rounds=20,
                run_dir=folder,
            )
            store.record_status(run_id, "running")
            for rnd in range(1, 21):
                record = {
                    "round": rnd,
                    "sampled": 10,
                    "succeeded": 10,
                    "failed": 0,
                    "seconds": 0.5,
                    "loss": 1.0 / rnd,
                    "accuracy": 1 - 0.5 / rnd,
                }
                store.add_round_metric(run_id, rnd, record)
            store.record_status(run_id, "succeeded")


async def user(
    client: httpx.AsyncClient, ids: list[str], until: float, think: float, out: dict[str, Any]
) -> None:
    """One user: list runs, read a run's metrics, again, until ``until``; between two
    requests a pause of ``think`` seconds on average (uniform in [0, 2 think])."""
    turn = 0
    while time.monotonic() < until:
        path = "/api/runs" if turn % 2 == 0 else f"/api/runs/{random.choice(ids)}/metrics.json"
        turn += 1
        started = time.perf_counter()
        try:
            response = await client.get(path)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        out["latency"].append(time.perf_counter() - started)
        out["errors"] += 0 if ok else 1
        if think > 0:
            await asyncio.sleep(random.uniform(0, 2 * think))


def load_average() -> str:
    """The 1-minute load average, for a figure's line."""
    return f"load {os.getloadavg()[0]:.1f}"


def cost(base: str, token: str, pid: int, count: int) -> float:
    """The server's CPU milliseconds per request over ``count`` sequential requests of the
    bench's mix (after 100 unmeasured ones)."""
    server = psutil.Process(pid)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers) as client:
        ids = [r["id"] for r in client.get("/api/runs").json()]
        paths = [
            "/api/runs" if i % 2 == 0 else f"/api/runs/{ids[i % len(ids)]}/metrics.json"
            for i in range(count + 100)
        ]
        for path in paths[:100]:
            client.get(path).raise_for_status()
        before = server.cpu_times()
        for path in paths[100:]:
            client.get(path).raise_for_status()
        after = server.cpu_times()
    spent: float = after.user + after.system - before.user - before.system
    return spent / count * 1000


async def load(base: str, token: str, users: int, seconds: float, think: float) -> dict[str, Any]:
    """Phase 1: ``users`` concurrent users for ``seconds``."""
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    out: dict[str, Any] = {"latency": [], "errors": 0}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:
        ids = [r["id"] for r in (await client.get("/api/runs")).json()]
        until = time.monotonic() + seconds
        await asyncio.gather(*(user(client, ids, until, think, out) for _ in range(users)))
    return out


async def follow(base: str, token: str, rounds: int) -> tuple[str, dict[int, float]]:
    """Phase 2: start a digits run and follow it; its id and when each round arrived."""
    text = next(e.config for e in examples() if e.name == "digits_fedavg")
    text = text.replace("rounds = 20", f"rounds = {rounds}")
    async with httpx.AsyncClient(base_url=base) as client:
        headers = {"Authorization": f"Bearer {token}"}
        made = await client.post("/api/runs", json={"config": text}, headers=headers)
        made.raise_for_status()
    run_id = str(made.json()["id"])
    arrived: dict[int, float] = {}
    url = base.replace("http://", "ws://") + f"/api/runs/{run_id}/ws?token={token}"
    async with connect(url, open_timeout=30) as socket:
        async for message in socket:
            now = time.time()
            event = json.loads(message)
            if event["type"] == "round_finished":
                arrived[event["record"]["round"]] = now
    return run_id, arrived


def prepare(stored: int, url: str | None = None, settings: str = "") -> Path:
    """A fresh data folder (``settings``: its ``platform.toml``) with the admin ``ada`` and
    ``stored`` finished runs, in SQLite or the database at ``url``."""
    data = Path(tempfile.mkdtemp(prefix="redfl-bench-")) / "data"
    data.mkdir(parents=True)
    (data / "platform.toml").write_text(settings, encoding="utf-8")
    where = ["--database-url", url] if url else []
    subprocess.run(
        [REDFL, "users", "create", "ada", "--role", "admin", "--data", str(data), *where],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    seed_runs(data, stored, url)
    return data


def start(
    command: list[str], data: Path, ready: str = "any"
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start a server (``command`` + ``--port``), wait for it (``ready="ok"``: and for its
    Ray head); it, its URL and a token."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (data / "serve.log").open("ab")
    server = subprocess.Popen([*command, str(port)], stderr=log, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            health = httpx.get(base + "/api/health")
            if health.status_code == 200 and (ready == "any" or health.json()["status"] == "ok"):
                break
        except httpx.HTTPError:
            if server.poll() is not None:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base} did not get ready ({ready}) within 120 s")
        time.sleep(0.2)
    login = httpx.post(base + "/api/auth/login", json={"username": "ada", "password": PASSWORD})
    return server, base, str(login.json()["access_token"])


def stop_server(server: subprocess.Popen[bytes], data: Path) -> None:
    """Stop a server and the Ray head it started for ``data``."""
    server.terminate()
    server.wait(30)
    head = read_head(data)
    if head is not None:
        stop_head(head.pid)


def percentiles(result: dict[str, Any]) -> tuple[float, float, float]:
    """p50, p95, p99 of a phase's latencies, in ms."""
    p50, p95, p99 = numpy.percentile([x * 1000 for x in result["latency"]], [50, 95, 99])
    return float(p50), float(p95), float(p99)


def training_config(rounds: int) -> str:
    """The digits demo made to keep both cores busy for long: tiled data, more epochs."""
    text = next(e.config for e in examples() if e.name == "digits_fedavg")
    return text.replace("rounds = 20", f"rounds = {rounds}").replace(
        "batch_size = 8", "batch_size = 8\ntile = 4"
    )


def measured(base: str, token: str, users: int, seconds: float, pid: int) -> dict[str, Any]:
    """``users`` closed-loop users for ``seconds``; with the CPU ms per request of the server
    (process ``pid``) and of this load generator, and the load average after."""
    server = psutil.Process(pid)
    server_cpu, own_cpu = sum(server.cpu_times()[:2]), time.process_time()
    result = asyncio.run(load(base, token, users, seconds, 0.0))
    done = max(1, len(result["latency"]))
    result["server_ms"] = (sum(server.cpu_times()[:2]) - server_cpu) / done * 1000
    result["client_ms"] = (time.process_time() - own_cpu) / done * 1000
    result["load"] = load_average()
    return result


def while_training(users: int, seconds: float, nice: int) -> dict[str, Any]:
    """Phase 3 on a server of its own: ``users`` closed-loop users with no run, then while
    a run trains; the run's rounds; the run stopped at the end."""
    data = prepare(20, settings=f"ray_nice = {nice}\n")
    server, base, token = start([REDFL, "serve", "--data", str(data), "--port"], data, "ok")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        idle = measured(base, token, users, seconds, server.pid)
        made = httpx.post(
            base + "/api/runs", json={"config": training_config(1000)}, headers=headers
        )
        made.raise_for_status()
        run_id = made.json()["id"]

        def training() -> dict[str, Any]:
            body: dict[str, Any] = httpx.get(f"{base}/api/runs/{run_id}", headers=headers).json()
            return body

        deadline = time.monotonic() + 180
        while training()["rounds_done"] < 1:
            if time.monotonic() > deadline or training()["status"] not in ("queued", "running"):
                raise RuntimeError(f"the training run did not get going: {training()}")
            time.sleep(0.5)
        before = training()["rounds_done"]
        busy = measured(base, token, users, seconds, server.pid)
        busy["rounds"] = training()["rounds_done"] - before
        httpx.post(f"{base}/api/runs/{run_id}/stop", headers=headers).raise_for_status()
        deadline = time.monotonic() + 60
        while training()["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.5)
        busy["ended"] = training()["status"]
    finally:
        stop_server(server, data)
    return {"idle": idle, "busy": busy}


async def split_load(bases: list[str], token: str, users: int, seconds: float) -> dict[str, Any]:
    """``users`` closed-loop users spread over the servers at ``bases``, merged."""
    parts = await asyncio.gather(
        *(load(base, token, users // len(bases), seconds, 0.0) for base in bases)
    )
    return {
        "latency": [x for part in parts for x in part["latency"]],
        "errors": sum(part["errors"] for part in parts),
    }


def replicas(users: int, seconds: float, stored: int) -> dict[str, Any]:
    """Phase 4: one server on PostgreSQL, then two on the same database and data folder."""
    with running_postgres() as postgres:
        url = create_database(postgres)
        data = prepare(stored, url, settings='ray_address = "http://127.0.0.1:9"\n')
        command = [REDFL, "serve", "--data", str(data), "--database-url", url, "--port"]
        first, base_one, token = start(command, data)
        second = None
        try:
            one = asyncio.run(split_load([base_one], token, users, seconds))
            one["load"] = load_average()
            second, base_two, _ = start(command, data)
            two = asyncio.run(split_load([base_one, base_two], token, users, seconds))
            two["load"] = load_average()
        finally:
            for server in (first, second):
                if server is not None:
                    server.terminate()
                    server.wait(30)
    return {"one": one, "two": two}


def compare(ref: str, stored: int, count: int, repeats: int) -> None:
    """Per-request CPU of revision ``ref`` (before) and of this tree (after), alternating."""
    sha, tree = baseline_tree(ref)
    best = {"before": float("inf"), "after": float("inf")}
    for _ in range(repeats):
        for side, root in (("before", tree), ("after", REPO)):
            data = prepare(stored)
            command = [sys.executable, "-c", APP_ONLY, str(root), str(data)]
            server, base, token = start(command, data)
            try:
                ms = cost(base, token, server.pid, count)
            finally:
                server.terminate()
                server.wait(30)
            best[side] = min(best[side], ms)
            print(
                f"{side} ({sha if side == 'before' else 'this tree'}): {ms:.2f} ms CPU/request "
                f"({count} sequential requests, {load_average()})",
                flush=True,
            )
    print(
        f"per-request server CPU, best of {repeats}: before {best['before']:.2f} ms, after "
        f"{best['after']:.2f} ms (after/before {best['after'] / best['before']:.2f}); "
        f"{load_average()}"
    )


def main() -> None:
    """Run both phases against a fresh server and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--stored", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--think",
        default="0,1",
        help="mean pauses (s) between a user's requests, one load phase each; 0: closed loop",
    )
    parser.add_argument(
        "--cost",
        type=int,
        default=1000,
        help="sequential requests for the per-request CPU (0: skip)",
    )
    parser.add_argument("--compare", metavar="REF", help="only the per-request CPU: REF vs this")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of --compare")
    parser.add_argument("--train-users", type=int, default=20, help="phase 3's users (0: skip)")
    parser.add_argument("--train-seconds", type=float, default=20.0)
    parser.add_argument("--ray-nice", type=int, default=10, help="the head's priority, phase 3")
    parser.add_argument(
        "--compare-nice", action="store_true", help="phase 3 with ray_nice = 0 as well"
    )
    parser.add_argument(
        "--replicas", type=int, default=20, help="phase 4's users over 1 then 2 servers (0: skip)"
    )
    parser.add_argument(
        "--phases", default="load,train,replicas", help="which to run: load (1, 2), train, replicas"
    )
    args = parser.parse_args()
    if args.compare:
        return compare(args.compare, args.stored, args.cost or 1000, args.repeats)
    phases = args.phases.split(",")
    if "load" in phases:
        load_phases(args)
    if "train" in phases and args.train_users:
        for nice in [args.ray_nice, *([0] if args.compare_nice and args.ray_nice else [])]:
            report_training(while_training(args.train_users, args.train_seconds, nice), nice, args)
    if "replicas" in phases and args.replicas:
        report_replicas(replicas(args.replicas, args.train_seconds, args.stored), args)


def load_phases(args: argparse.Namespace) -> None:
    """Phases 1 and 2 (and the CPU per request) on one server; their lines."""
    data = prepare(args.stored)
    server, base, token = start([REDFL, "serve", "--data", str(data), "--port"], data)
    try:
        memory = psutil.Process(server.pid)
        cpu_ms = cost(base, token, server.pid, args.cost) if args.cost else None
        cost_load = load_average()
        results = {}
        for think in (float(x) for x in args.think.split(",")):
            server_cpu, own_cpu = sum(memory.cpu_times()[:2]), time.process_time()
            result = asyncio.run(load(base, token, args.users, args.seconds, think))
            done = max(1, len(result["latency"]))  # CPU ms per request: server, load generator
            result["server_ms"] = (sum(memory.cpu_times()[:2]) - server_cpu) / done * 1000
            result["client_ms"] = (time.process_time() - own_cpu) / done * 1000
            results[think] = {**result, "load": load_average()}
        rss_load = memory.memory_info().rss / 2**20
        run_id, arrived = asyncio.run(follow(base, token, args.rounds))
        rss_ws = memory.memory_info().rss / 2**20
        events = [json.loads(x) for x in (data / "runs" / run_id / "events.jsonl").open()]
        ends = {e["record"]["round"]: e["time"] for e in events if e["type"] == "round_finished"}
        ws = [(arrived[r] - ends[r]) * 1000 for r in ends if r in arrived]
    finally:
        server.terminate()
        server.wait(30)
        head = read_head(data)
        if head is not None:
            stop_head(head.pid)
    print(
        f"platform bench on {os.cpu_count()} shared cores (load average "
        f"{os.getloadavg()[0]:.1f}): {args.users} users, {args.seconds:g} s a phase, "
        f"{args.stored} stored runs"
    )
    if cpu_ms is not None:
        print(
            f"server CPU per request (bench mix, {args.cost} sequential): {cpu_ms:.2f} ms, "
            f"at most {1000 / cpu_ms:.0f} requests/s per core ({cost_load})"
        )
    for think, result in results.items():
        latency = [x * 1000 for x in result["latency"]]
        rate = len(latency) / args.seconds
        p50, p95, p99 = numpy.percentile(latency, [50, 95, 99])
        verdict = "met" if p95 < TARGET_P95_MS and result["errors"] == 0 else "not met"
        print(
            f"think {think:g} s: requests {len(latency)} ({rate:.0f}/s), "
            f"errors {result['errors']}, latency ms p50 {p50:.1f} "
            f"p95 {p95:.1f} p99 {p99:.1f}; p95 / target "
            f"{TARGET_P95_MS:g} ms = {p95 / TARGET_P95_MS:.2f} ({verdict}; "
            f"{result['load']}); CPU ms/request: server {result['server_ms']:.2f}, "
            f"load generator {result['client_ms']:.2f}"
        )
    print(
        f"websocket ms (round end -> subscriber, {len(ws)}/{args.rounds} rounds): "
        f"median {statistics.median(ws):.1f}  max {max(ws):.1f} ({load_average()})"
    )
    print(f"server RSS MiB: after load {rss_load:.0f}, after the followed run {rss_ws:.0f}")


def _figures(result: dict[str, Any], seconds: float) -> str:
    p50, p95, p99 = percentiles(result)
    rate = len(result["latency"]) / seconds
    cpu = (
        f"; CPU ms/request: server {result['server_ms']:.2f}, load generator "
        f"{result['client_ms']:.2f}"
        if "server_ms" in result
        else ""
    )
    return (
        f"p50 {p50:.1f} p95 {p95:.1f} p99 {p99:.1f} ms, {rate:.0f} req/s, "
        f"errors {result['errors']} ({result['load']}){cpu}"
    )


def report_training(result: dict[str, Any], nice: int, args: argparse.Namespace) -> None:
    """Phase 3's lines: idle, then while a run trains, against the 200 ms target."""
    idle, busy = result["idle"], result["busy"]
    p95 = percentiles(busy)[1]
    verdict = "met" if p95 < TRAIN_TARGET_P95_MS and busy["errors"] == 0 else "not met"
    print(
        f"{args.train_users} clients, no run (head nice {nice}): "
        f"{_figures(idle, args.train_seconds)}"
    )
    print(
        f"{args.train_users} clients while a run trains (head nice {nice}; the run did "
        f"{busy['rounds']} rounds meanwhile, then was {busy['ended']}): "
        f"{_figures(busy, args.train_seconds)}; p95 / target {TRAIN_TARGET_P95_MS:g} ms = "
        f"{p95 / TRAIN_TARGET_P95_MS:.2f} ({verdict})"
    )


def report_replicas(result: dict[str, Any], args: argparse.Namespace) -> None:
    """Phase 4's lines: one server, two servers, and the ratio of their p95."""
    one, two = result["one"], result["two"]
    print(f"{args.replicas} clients, one server on PostgreSQL: {_figures(one, args.train_seconds)}")
    print(
        f"{args.replicas} clients over two replicas on the same database: "
        f"{_figures(two, args.train_seconds)}; p95 two / one = "
        f"{percentiles(two)[1] / percentiles(one)[1]:.2f}"
    )


if __name__ == "__main__":
    main()
