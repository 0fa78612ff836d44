"""Runs outlive the web server: real ``redfl serve`` processes, a real Ray head and job.

The server is killed with SIGKILL while the bundled digits example runs as a Ray job; a
restarted server finds the run still going, and it ends succeeded with every round and
event stored. A second run waits in the queue (one run at a time) until then, starts on the
restarted server and is cancelled mid-run. The Ray head the server started is stopped by
its pid at the end.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
from waiting import free_port, wait_until

from redfl.platform.catalog import examples
from redfl.runtime.jobs import read_head, stop_head

REDFL = str(Path(sys.executable).parent / "redfl")
PASSWORD = b"killed server password\n"
ROUNDS = 6


def _digits_config(rounds: int = ROUNDS) -> str:
    text = next(e.config for e in examples() if e.name == "digits_fedavg")
    for old, new in (
        ("rounds = 20", f"rounds = {rounds}"),
        ("num_clients = 100", "num_clients = 20"),
        ("min_fit_clients = 50", "min_fit_clients = 10"),
    ):
        assert old in text
        text = text.replace(old, new)
    return text


class Server:
    """A ``redfl serve`` process on a free port of 127.0.0.1."""

    def __init__(self, data: Path, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [REDFL, "serve", "--port", str(self.port), "--data", str(data)]
        self.process = subprocess.Popen(
            args, stderr=log.open("ab"), stdout=subprocess.DEVNULL, start_new_session=True
        )
        self.log = log
        assert wait_until(self.healthy, 60), log.read_text()

    def healthy(self) -> bool:
        try:
            return httpx.get(self.base + "/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, token: str) -> Any:
        response = httpx.get(self.base + path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        return response.json()

    def post_run(self, config: str, token: str) -> str:
        response = httpx.post(
            self.base + "/api/runs",
            json={"config": config},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(30)


def _login(server: Server) -> str:
    body = {"username": "ada", "password": PASSWORD.decode().strip()}
    response = httpx.post(server.base + "/api/auth/login", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _cancel_mid_run(server: Server, run_id: str, token: str) -> None:
    """Cancel the running ``run_id`` once it has a round; it ends cancelled at a round
    boundary with its model, state and summary saved."""

    def running() -> bool:
        run = server.get(f"/api/runs/{run_id}", token)
        return run["status"] == "running" and len(run["metrics"]) >= 1

    assert wait_until(running, 120), server.log.read_text()[-3000:]
    response = httpx.post(
        server.base + f"/api/runs/{run_id}/cancel", headers={"Authorization": f"Bearer {token}"}
    )
    assert (response.status_code, response.json()["cancel_requested"]) == (200, True)
    ended = lambda: server.get(f"/api/runs/{run_id}", token)["status"] != "running"  # noqa: E731
    assert wait_until(ended, 60), server.log.read_text()[-3000:]
    run = server.get(f"/api/runs/{run_id}", token)
    assert run["status"] == "cancelled" and 1 <= len(run["metrics"]) < 500
    assert {"model.safetensors", "summary.json"} <= set(run["artifacts"])
    kinds = [e["type"] for e in server.get(f"/api/runs/{run_id}/events", token)]
    assert kinds[-2:] == ["run_cancelled", "status"] and "checkpoint_saved" in kinds


def test_a_run_survives_kill_9_of_the_server(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    made = subprocess.run(
        [REDFL, "users", "create", "ada", "--role", "admin", "--data", str(data)],
        input=PASSWORD,
        capture_output=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    servers: list[Server] = []
    try:
        servers.append(first := Server(data, log))
        token = _login(first)
        run_id, later = (first.post_run(_digits_config(n), token) for n in (ROUNDS, 500))

        def mid_run() -> bool:
            run = first.get(f"/api/runs/{run_id}", token)
            assert run["status"] in ("queued", "running"), (run.get("error"), run)
            return run["status"] == "running" and len(run["metrics"]) >= 1

        assert wait_until(mid_run, 300), log.read_text()[-3000:]
        assert first.get(f"/api/runs/{later}", token)["status"] == "queued"  # 1 at a time
        first.stop(signal.SIGKILL)
        head = read_head(data)
        assert head is not None  # the Ray head outlived the server
        assert psutil.Process(head.pid).nice() == 10  # it, and what it starts, yield to the API
        jobs = [p for p in psutil.process_iter(["cmdline"]) if run_id in (p.info["cmdline"] or [])]
        assert jobs and all(job.nice() == 10 for job in jobs)
        for job in jobs:  # in sessions of their own (Ray's doing): those yield as groups too
            group = Path(f"/proc/{job.pid}/autogroup")
            assert not group.exists() or group.read_text().rstrip().endswith("nice 10")

        servers.append(second := Server(data, log))
        token = _login(second)

        def finished() -> bool:
            return bool(second.get(f"/api/runs/{run_id}", token)["status"] != "running")

        assert wait_until(finished, 120), log.read_text()[-3000:]
        run = second.get(f"/api/runs/{run_id}", token)
        assert (run["status"], run["error"]) == ("succeeded", None)
        assert [m["round"] for m in run["metrics"]] == list(range(1, ROUNDS + 1))
        events = second.get(f"/api/runs/{run_id}/events", token)
        kinds = [e["type"] for e in events]
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert kinds.count("round_finished") == ROUNDS
        assert kinds[0] == "status" and kinds[-2:] == ["run_finished", "status"]
        assert events[-1]["data"]["status"] == "succeeded"
        assert len(second.get("/api/runs", token)) == 2
        assert read_head(data) == head  # reused, not restarted
        _cancel_mid_run(second, later, token)
    finally:
        for server in servers:
            server.stop()
        found = read_head(data)
        if found is not None:
            stop_head(found.pid, timeout=10)
