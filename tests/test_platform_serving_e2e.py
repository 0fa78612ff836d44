"""Serving a model from a real ``redfl serve`` (its own Ray head, as in production): a
researcher's run executes as a Ray job, its model is deployed and answers a viewer; the
server restarts and the model is still served; the Ray head is stopped (Ray Serve loses
everything) and the restarted server deploys the model again on the new head.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from waiting import free_port, wait_until

from redfl.runtime.jobs import read_head, stop_head

REDFL = str(Path(sys.executable).parent / "redfl")
PASSWORDS = {"rita": "researcher password", "vic": "viewer password"}
CONFIG = """[federation]
name = "digits"
rounds = 2
[client]
target = "redfl.examples.digits:DigitsClient"
num_clients = 3
options = {epochs = 2, lr = 0.3}
"""


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/api/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Server:
    data: Path
    folder: Path
    url: str = ""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        port = free_port()
        settings = self.data / "platform.toml"
        settings.write_text("serving_replica_cpus = 0.25\nray_num_cpus = 2\n", encoding="utf-8")
        with (self.folder / "serve.log").open("ab") as log:
            process = subprocess.Popen(
                [REDFL, "serve", "--port", str(port), "--data", str(self.data)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.process, self.url = process, f"http://127.0.0.1:{port}"
        assert wait_until(lambda: process.poll() is not None or _healthy(self.url), 90.0)
        assert process.poll() is None, (self.folder / "serve.log").read_text()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)

    def login(self, name: str) -> dict[str, str]:
        reply = httpx.post(
            self.url + "/api/auth/login",
            json={"username": name, "password": PASSWORDS[name]},
            timeout=30,
        )
        return {"Authorization": f"Bearer {reply.json()['access_token']}"}

    def get(self, path: str, who: str) -> Any:
        return httpx.get(self.url + path, headers=self.login(who), timeout=60).json()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    data = tmp_path / "data"
    for name, role in (("rita", "researcher"), ("vic", "viewer")):
        created = subprocess.run(
            [REDFL, "users", "create", name, "--role", role, "--data", str(data)],
            input=(PASSWORDS[name] + "\n").encode(),
            capture_output=True,
            check=False,
        )
        assert created.returncode == 0, created.stderr.decode()
    made = Server(data, tmp_path)
    try:
        yield made
    finally:
        made.stop()
        head = read_head(data)
        if head is not None:
            stop_head(head.pid, timeout=5)


def _status(server: Server, deployment_id: str) -> str:
    return str(server.get(f"/api/deployments/{deployment_id}", "vic")["status"])


def _predict(server: Server, deployment_id: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/deployments/{deployment_id}/predict",
        json={"inputs": [[0.5] * 64, [0.0] * 64]},
        headers=server.login("vic"),
        timeout=60,
    )


def test_a_model_served_from_redfl_serve_outlives_restarts_of_the_server_and_its_head(
    server: Server,
) -> None:
    server.start()
    made = httpx.post(
        server.url + "/api/runs", json={"config": CONFIG}, headers=server.login("rita"), timeout=60
    )
    assert made.status_code == 201, made.text
    run_id = made.json()["id"]
    assert wait_until(
        lambda: server.get(f"/api/runs/{run_id}", "vic")["status"] in ("succeeded", "failed"),
        240.0,
    )
    assert server.get(f"/api/runs/{run_id}", "vic")["status"] == "succeeded"
    deployed = httpx.post(
        f"{server.url}/api/runs/{run_id}/deployments", headers=server.login("rita"), timeout=60
    )
    assert deployed.status_code == 202, deployed.text
    deployment_id = deployed.json()["id"]
    assert wait_until(lambda: _status(server, deployment_id) != "deploying", 180.0)
    shown = server.get(f"/api/deployments/{deployment_id}", "vic")
    assert shown["status"] == "running", shown["error"]
    first = _predict(server, deployment_id)
    assert first.status_code == 200, first.text
    assert [len(row) for row in first.json()["outputs"]] == [10, 10]

    server.stop()  # the head, and Ray Serve on it, outlive the server
    server.start()
    assert _status(server, deployment_id) == "running"
    assert _predict(server, deployment_id).json() == first.json()

    server.stop()
    head = read_head(server.data)
    assert head is not None
    stop_head(head.pid, timeout=5)  # Ray Serve loses the model with its head
    server.start()  # a new head; the model is deployed again on it
    assert wait_until(lambda: _predict(server, deployment_id).status_code == 200, 240.0)
    assert _predict(server, deployment_id).json() == first.json()
    assert _status(server, deployment_id) == "running"
    assert "redeploying a deployment Ray Serve no longer runs" in (
        server.folder / "serve.log"
    ).read_text(encoding="utf-8", errors="replace")
