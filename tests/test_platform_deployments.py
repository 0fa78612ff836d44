"""Serving a run's model from the platform, on real Ray Serve (the session's Ray): deploy,
predict through the platform's tokens (equal to the local hook), refusals by role and
state, stop, and the deployments reconciled with Ray Serve when the server restarts."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from platform_app import add_user, bad_tokens, bearer, make_app, store_run, trained_run
from waiting import wait_until

from redfl.data.digits import load_digits_arrays
from redfl.platform.store import Store
from redfl.run.serving import load_run
from redfl.runtime.serving import deployment_states


@dataclass
class Platform:
    data: Path
    settings: dict[str, Any]
    app: FastAPI
    client: TestClient
    run_id: str


@pytest.fixture(scope="module")
def platform(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    from ray import serve

    data = tmp_path_factory.mktemp("platform") / "data"
    address = ray_session.get_runtime_context().gcs_address
    settings = {"ray_address": address, "serving_replica_cpus": 0.25, "serving_max_replicas": 2}
    app = make_app(data, **settings)
    for name, role in (("ada", "admin"), ("rita", "researcher"), ("ron", "researcher")):
        add_user(app, name, role)
    add_user(app, "vic", "viewer")
    run_id = trained_run(app, "rita")
    with TestClient(app) as client:
        yield Platform(data, settings, app, client, run_id)
    serve.shutdown()  # type: ignore[no-untyped-call]


def _rows(count: int, start: int = 0) -> np.ndarray:
    x, _ = load_digits_arrays()
    return np.array(x[start : start + count])


def _deploy(platform: Platform, who: str = "rita", **body: Any) -> Any:
    reply = platform.client.post(
        f"/api/runs/{platform.run_id}/deployments", json=body, headers=bearer(platform.app, who)
    )
    return reply


def _running(platform: Platform, deployment_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def running() -> bool:
        reply = platform.client.get(
            f"/api/deployments/{deployment_id}", headers=bearer(platform.app, "vic")
        )
        found.update(reply.json())
        return found["status"] in ("running", "failed", "lost")

    assert wait_until(running, 120.0), found
    assert found["status"] == "running", found
    return found


def _predict(platform: Platform, deployment_id: str, rows: Any, who: str = "vic") -> Any:
    return platform.client.post(
        f"/api/deployments/{deployment_id}/predict",
        json={"inputs": rows},
        headers=bearer(platform.app, who),
    )


def test_deploy_predict_reconcile_and_stop(platform: Platform) -> None:
    app, client = platform.app, platform.client
    for name, headers in bad_tokens(app, "ada").items():
        reply = client.post(f"/api/runs/{platform.run_id}/deployments", json={}, headers=headers)
        assert reply.status_code == 401, name
    refused = _deploy(platform, "vic")
    assert (refused.status_code, refused.json()["detail"]) == (
        403,
        "needs role 'researcher', you are 'viewer'",
    )
    other = _deploy(platform, "ron")
    assert (other.status_code, other.json()["detail"]) == (
        403,
        "only the run's owner or an admin may deploy it",
    )
    too_many = _deploy(platform, replicas=3)
    assert (too_many.status_code, too_many.json()["detail"]) == (
        422,
        "body.replicas: at most 2 (got 3)",
    )

    made = _deploy(platform, max_batch=8)
    assert made.status_code == 202, made.text
    assert made.json()["status"] == "deploying"
    assert made.json()["name"] == f"run-{platform.run_id}"
    deployment_id = made.json()["id"]
    shown = _running(platform, deployment_id)
    assert (shown["owner"], shown["replicas"], shown["max_batch"]) == ("rita", 1, 8)
    again = _deploy(platform)
    assert again.status_code == 409
    assert again.json()["detail"].startswith(f"run {platform.run_id} is deployed already")
    listed = client.get(
        "/api/deployments", params={"run_id": platform.run_id}, headers=bearer(app, "vic")
    )
    assert [d["id"] for d in listed.json()] == [deployment_id]

    # predictions: any role, equal to the local hook; bad input named; no token refused
    served = load_run(platform.data / "runs" / platform.run_id)
    rows = _rows(5)
    reply = _predict(platform, deployment_id, rows.tolist())
    assert reply.status_code == 200, reply.text
    np.testing.assert_array_equal(
        np.asarray(reply.json()["outputs"], dtype=np.float32),
        served.predictor(served.parameters, rows),
    )
    bad = _predict(platform, deployment_id, [[0.0] * 63])
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("body.inputs.0: a row must hold 64 numbers")
    text = _predict(platform, deployment_id, [[0.0] * 63 + ["x"]])
    assert text.status_code == 422
    assert text.json()["detail"].startswith("body.inputs.0.63: Input should be a valid number")
    for name, headers in bad_tokens(app, "ada").items():
        reply = client.post(
            f"/api/deployments/{deployment_id}/predict",
            json={"inputs": rows.tolist()},
            headers=headers,
        )
        assert reply.status_code == 401, name

    # a restart of the server after Ray Serve lost the model: it is deployed again
    from ray import serve

    name = shown["name"]
    serve.delete(name)
    assert name not in deployment_states()
    lost = _predict(platform, deployment_id, rows.tolist())
    assert lost.status_code == 503
    assert f"no served model named '{name}'" in lost.json()["detail"]
    restarted = make_app(platform.data, **platform.settings)
    assert restarted.state.models.reconcile() == {deployment_id: "running"}
    assert deployment_states()[name].running == 1
    assert _predict(platform, deployment_id, rows[:2].tolist()).status_code == 200
    assert restarted.state.models.reconcile() == {deployment_id: "running"}  # left alone

    # stop: not a viewer, not another researcher; its deployer does
    for who, status in (("vic", 403), ("ron", 403)):
        reply = client.delete(f"/api/deployments/{deployment_id}", headers=bearer(app, who))
        assert reply.status_code == status
    stopped = client.delete(f"/api/deployments/{deployment_id}", headers=bearer(app, "rita"))
    assert stopped.status_code == 204
    assert name not in deployment_states()
    assert not (platform.data / "models" / name).exists()
    gone = client.get(f"/api/deployments/{deployment_id}", headers=bearer(app, "vic"))
    assert gone.status_code == 404


def test_a_lost_model_that_cannot_be_deployed_again_is_marked_lost(platform: Platform) -> None:
    app = platform.app
    run_id = trained_run(app, "rita")
    with app.state.sessions() as session:
        made = Store(session).create_deployment(run_id, None, 1, 4)
        Store(session).set_deployment_status(made.id, "running")  # as before a restart
    shutil.rmtree(app.state.settings.runs_dir / run_id, ignore_errors=True)
    with app.state.sessions() as session:  # another server reconciling: this one leaves it
        assert Store(session).hold_lease("deployments", "another server", 60.0)
    assert app.state.models.reconcile() == {}
    with app.state.sessions() as session:
        assert Store(session).require_deployment(made.id).status == "running"
        Store(session).release_lease("deployments", "another server")
    assert app.state.models.reconcile() == {made.id: "lost"}
    reply = platform.client.get(f"/api/deployments/{made.id}", headers=bearer(app, "vic"))
    assert reply.json()["status"] == "lost"
    assert reply.json()["error"].startswith("run folder: ")
    refused = _predict(platform, made.id, [[0.0] * 64])
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(f"deployment {made.id} is lost, not running: ")
    ended = platform.client.delete(f"/api/deployments/{made.id}", headers=bearer(app, "ada"))
    assert ended.status_code == 204


def test_only_a_succeeded_run_with_a_servable_model_is_deployed(platform: Platform) -> None:
    app, client = platform.app, platform.client
    with app.state.sessions() as session:
        store = Store(session)
        queued = store_run(store, store.require_user("rita").id)
    reply = client.post(f"/api/runs/{queued}/deployments", headers=bearer(app, "rita"))
    assert (reply.status_code, reply.json()["detail"]) == (
        409,
        f"run {queued} is queued: only a succeeded run's model can be deployed",
    )
    untrained = trained_run(app, "rita", train=False)
    reply = client.post(f"/api/runs/{untrained}/deployments", headers=bearer(app, "ada"))
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith("run folder: ")
    missing = client.post("/api/runs/nope/deployments", headers=bearer(app, "ada"))
    assert missing.status_code == 404
    cap = app.state.settings.max_upload_bytes  # checked before the body is read
    big = client.post(
        "/api/deployments/0123abcd/predict",
        content=b"[" * (cap + 1),
        headers={**bearer(app, "vic"), "content-type": "application/json"},
    )
    assert big.status_code == 413
    with app.state.sessions() as session:
        assert Store(session).list_deployments() == []
