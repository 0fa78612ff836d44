"""Two API replicas on one PostgreSQL database and one Ray head: real ``redfl serve``
processes sharing a data folder and a database URL.

They serve the same users and runs (a token from one works on the other, a user made on one
logs in on the other), one of them at a time executes the queue (the executor lease), no run
executes twice, cancel and stop work from either, and a subscriber of either follows a run
live. When the executing replica stops, the other takes the queue over.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from pg_server import PostgresServer, create_database, postgres_server_fixture  # noqa: F401
from sqlalchemy import create_engine, text
from waiting import free_port, wait_until
from websockets.asyncio.client import connect

from redfl.platform.catalog import examples
from redfl.runtime.jobs import read_head, stop_head

REDFL = str(Path(sys.executable).parent / "redfl")
PASSWORD = "replica password"


def _digits(rounds: int, epochs: int = 1) -> str:
    text_ = next(e.config for e in examples() if e.name == "digits_fedavg")
    for old, new in (
        ("rounds = 20", f"rounds = {rounds}"),
        ("num_clients = 100", "num_clients = 10"),
        ("min_fit_clients = 50", "min_fit_clients = 5"),
        ("epochs = 5", f"epochs = {epochs}"),
    ):
        assert old in text_
        text_ = text_.replace(old, new)
    return text_


class Replica:
    """A ``redfl serve`` on a free port, on the shared data folder and database."""

    def __init__(self, data: Path, url: str, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [REDFL, "serve", "--port", str(self.port), "--data", str(data)]
        self.process = subprocess.Popen(
            [*args, "--database-url", url],
            stderr=log.open("ab"),
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.log = log
        assert wait_until(self.up, 60), log.read_text()[-3000:]

    def up(self) -> bool:
        try:
            return httpx.get(self.base + "/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def call(self, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, self.base + path, json=body, headers=headers, timeout=30)

    def login(self, name: str, password: str = PASSWORD) -> str:
        response = httpx.post(
            self.base + "/api/auth/login", json={"username": name, "password": password}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def run(self, run_id: str, token: str) -> dict[str, Any]:
        response = self.call("GET", f"/api/runs/{run_id}", token)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


def _leader_pid(url: str) -> int | None:
    engine = create_engine(url)
    with engine.connect() as connection:
        holder = connection.execute(text("SELECT holder FROM leases WHERE name = 'executor'"))
        row = holder.first()
    engine.dispose()
    return None if row is None else int(str(row[0]).split(":")[1])


async def _follow(base: str, run_id: str, token: str, rounds: int) -> list[int]:
    """The rounds a subscriber of ``base`` receives live, until ``rounds`` of them."""
    seen: list[int] = []
    url = base.replace("http://", "ws://") + f"/api/runs/{run_id}/ws?token={token}"
    async with connect(url, open_timeout=30) as socket:
        async for message in socket:
            event = json.loads(message)
            if event["type"] == "round_finished":
                seen.append(event["record"]["round"])
                if len(seen) >= rounds:
                    break
    return seen


def _kinds(replica: Replica, run_id: str, token: str) -> list[str]:
    events = replica.call("GET", f"/api/runs/{run_id}/events", token).json()
    return [e["type"] for e in events]


def test_two_replicas_serve_one_platform(tmp_path: Path, postgres_server: PostgresServer) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    url = create_database(postgres_server)
    create = [REDFL, "users", "create", "ada", "--role", "admin", "--data", str(data)]
    made = subprocess.run(
        [*create, "--database-url", url],
        input=(PASSWORD + "\n").encode(),
        capture_output=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    replicas: list[Replica] = []
    try:
        replicas += [Replica(data, url, log), Replica(data, url, log)]
        one, two = replicas
        token = one.login("ada")
        assert two.call("GET", "/api/auth/me", token).json()["name"] == "ada"  # one secret
        body = {"name": "rita", "role": "researcher", "password": PASSWORD}
        assert two.call("POST", "/api/users", token, body).status_code == 201
        rita = one.login("rita")  # made on two, logs in on one

        long_run = one.call("POST", "/api/runs", rita, {"config": _digits(200, epochs=20)})
        queued = two.call("POST", "/api/runs", rita, {"config": _digits(3)})
        assert (long_run.status_code, queued.status_code) == (201, 201)
        long_id, queued_id = long_run.json()["id"], queued.json()["id"]
        seen = asyncio.run(_follow(two.base, long_id, rita, 2))  # made on one, followed on two
        assert seen == [1, 2]
        assert one.run(queued_id, rita)["status"] == "queued"  # one run at a time, for both
        cancelled = one.call("POST", f"/api/runs/{queued_id}/cancel", rita)
        assert cancelled.json()["status"] == "cancelled"  # cancelled on one, made on two
        stopping = two.call("POST", f"/api/runs/{long_id}/stop", rita)
        assert stopping.json()["stop_requested"] is True  # stopped on two, made on one

        def ended() -> bool:
            return bool(one.run(long_id, rita)["status"] != "running")

        assert wait_until(ended, 60), log.read_text()[-3000:]
        stopped = one.run(long_id, rita)
        assert (stopped["status"], stopped["error"]) == ("stopped", "stopped by rita")
        for run_id, closing in ((long_id, "run_stopped"), (queued_id, "run_cancelled")):
            kinds = _kinds(two, run_id, rita)
            assert kinds.count(closing) == 1
        assert _kinds(one, long_id, rita).count("run_started") == 1  # executed once
        assert "run_started" not in _kinds(one, queued_id, rita)  # never executed

        leader = _leader_pid(url)
        assert leader in (one.process.pid, two.process.pid)
        survivor = two if leader == one.process.pid else one
        (one if survivor is two else two).stop()  # the executing replica goes away
        last = survivor.call("POST", "/api/runs", rita, {"config": _digits(3)}).json()["id"]

        def done() -> bool:
            return bool(survivor.run(last, rita)["status"] in ("succeeded", "failed"))

        assert wait_until(done, 120), log.read_text()[-3000:]
        assert survivor.run(last, rita)["status"] == "succeeded"
        assert _leader_pid(url) == survivor.process.pid  # it took the queue over
        assert len(survivor.call("GET", "/api/runs", rita).json()) == 3
    finally:
        for replica in replicas:
            replica.stop()
        head = read_head(data)
        if head is not None:
            stop_head(head.pid, timeout=5)
