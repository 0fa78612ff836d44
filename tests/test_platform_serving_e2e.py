"""Serving a model from a real ``redfl serve`` (its own Ray head, as in production): a
researcher's run executes as a Ray job, its model is deployed and answers a viewer; the
server restarts and the model is still served; the Ray head is stopped (Ray Serve loses
everything) and the restarted server deploys the model again on the new head.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from platform_server import Server, make_server
from waiting import wait_until

from redfl.runtime.jobs import read_head, stop_head

CONFIG = """[federation]
name = "digits"
rounds = 2
[client]
target = "redfl.examples.digits:DigitsClient"
num_clients = 3
options = {epochs = 2, lr = 0.3}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from make_server(tmp_path, {"serving_replica_cpus": 0.25, "ray_num_cpus": 2})


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
