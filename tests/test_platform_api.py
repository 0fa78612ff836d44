"""The platform's resources: projects, runs from untrusted configs, downloads, catalog."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pg_server import PostgresServer, create_database, postgres_server_fixture  # noqa: F401
from platform_app import (  # noqa: F401  (fixtures)
    PASSWORD,
    add_user,
    app_fixture,
    bearer,
    client_fixture,
    make_app,
)

from redfl.algorithms.registry import STRATEGIES
from redfl.platform.catalog import examples
from redfl.platform.settings import Settings
from redfl.platform.store import Store
from redfl.platform.untrusted import parse_web_config
from redfl.run.folder import load_parameters, save_parameters

REPO = Path(__file__).resolve().parent.parent
DEMO = (REPO / "examples" / "digits_fedavg.toml").read_text()
SMALL = '[federation]\nname = "small"\nrounds = 3\n[client]\ntarget = "{target}"\nnum_clients = 4\n'


def _create_run(
    client: TestClient, headers: dict[str, str], config: str = DEMO, **extra: str
) -> httpx.Response:
    response: httpx.Response = client.post(
        "/api/runs", json={"config": config, **extra}, headers=headers
    )
    return response


def test_projects_crud_and_who_may_change_them(app: FastAPI, client: TestClient) -> None:
    rita, vic, ada = bearer(app, "rita"), bearer(app, "vic"), bearer(app, "ada")
    add_user(app, "rob", "researcher")
    rob = bearer(app, "rob")
    body = {"name": "mnist", "description": "digits", "members": ["vic"]}
    made = client.post("/api/projects", json=body, headers=rita)
    assert made.status_code == 201
    project = made.json()
    assert (project["owner"], project["members"]) == ("rita", ["vic"])
    assert client.post("/api/projects", json=body, headers=vic).status_code == 403
    assert client.post("/api/projects", json=body, headers=rob).status_code == 409
    unknown = client.post("/api/projects", json={"name": "p2", "members": ["zed"]}, headers=rob)
    assert (unknown.status_code, unknown.json()["detail"]) == (404, "members: no such user 'zed'")
    url = f"/api/projects/{project['id']}"
    assert client.get(url, headers=vic).json()["description"] == "digits"
    assert client.patch(url, json={"description": "x"}, headers=rob).status_code == 403
    changed = client.patch(url, json={"members": ["rob", "vic"]}, headers=rita)
    assert changed.json()["members"] == ["rob", "vic"]
    assert client.patch(url, json={"description": "by admin"}, headers=ada).status_code == 200
    assert [p["name"] for p in client.get("/api/projects", headers=vic).json()] == ["mnist"]
    assert client.delete(url, headers=rob).status_code == 403
    assert client.delete(url, headers=rita).status_code == 204
    assert client.get(url, headers=vic).status_code == 404


def test_a_run_is_queued_with_its_config_and_read_back(app: FastAPI, client: TestClient) -> None:
    made = _create_run(client, bearer(app, "rita"))
    assert made.status_code == 201
    run = made.json()
    assert (run["status"], run["name"], run["owner"], run["rounds"]) == (
        "queued",
        "digits-fedavg",
        "rita",
        20,
    )
    assert len(run["id"]) == 32
    folder = app.state.settings.runs_dir / run["id"]
    assert (folder / "config.toml").read_text() == DEMO
    with app.state.sessions() as session:
        store = Store(session)
        store.add_round_metric(run["id"], 1, {"round": 1, "accuracy": 0.25})
        store.add_failure(run["id"], 1, "client-3", "fit", "ValueError: boom")
    got = client.get(f"/api/runs/{run['id']}", headers=bearer(app, "vic")).json()
    assert got["metrics"] == [{"round": 1, "accuracy": 0.25}]
    assert got["failures"] == [
        {"round": 1, "node": "client-3", "phase": "fit", "reason": "ValueError: boom"}
    ]
    assert (got["config"], got["format"], got["artifacts"]) == (DEMO, "toml", ["config.toml"])
    listed = client.get("/api/runs", params={"status": "queued"}, headers=bearer(app, "vic"))
    assert [r["id"] for r in listed.json()] == [run["id"]]
    none = client.get("/api/runs", params={"status": "running"}, headers=bearer(app, "vic"))
    assert none.json() == []
    assert client.get("/api/runs/" + "0" * 32, headers=bearer(app, "vic")).status_code == 404


def test_json_configs_are_accepted(app: FastAPI, client: TestClient) -> None:
    config = {"client": {"target": "redfl.examples.echo:EchoClient", "num_clients": 3}}
    made = _create_run(client, bearer(app, "rita"), json.dumps(config), format="json")
    assert made.status_code == 201 and made.json()["rounds"] == 10


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ("[client\n", "config", "not valid TOML"),
        (SMALL.format(target="os:system"), "client.target", "module 'os' is not in an allowed"),
        (
            SMALL.format(target="redfl.examplesx.evil:C"),
            "client.target",
            "'redfl.examplesx.evil' is not in an allowed package",
        ),
        (
            SMALL.format(target="redfl.examples.echo:EchoClient")
            + '[evaluation]\ncentral = "subprocess:run"\n',
            "evaluation.central",
            "module 'subprocess'",
        ),
        (
            SMALL.format(target="redfl.examples.echo:EchoClient")
            + '[strategy]\ntarget = "shutil:rmtree"\n',
            "strategy.target",
            "module 'shutil' is not in an allowed package",
        ),
        (
            SMALL.format(target="redfl.examples.echo:EchoClient").replace(
                "rounds = 3", 'rounds = 3\naddress = "10.0.0.1:6379"'
            ),
            "federation.address",
            "not allowed in a web config",
        ),
        (
            SMALL.format(target="redfl.examples.echo:EchoClient")
            + '[topology]\nschema = "custom"\nalgorithm = "dsgd"\ntopology_file = "/etc/passwd"\n',
            "topology.topology_file",
            "no server files",
        ),
        (
            SMALL.format(target="redfl.examples.echo:EchoClient").replace("= 4", "= 5000"),
            "client.num_clients",
            "5000 exceeds the operator's max_clients (1000)",
        ),
        (
            SMALL.format(target="redfl.examples.echo:EchoClient").replace("= 3", "= 5000"),
            "federation.rounds",
            "5000 exceeds the operator's max_rounds (1000)",
        ),
        (
            SMALL.format(target="redfl.examples.echo:EchoClient")
            + "[resources]\nnum_workers = 9\n",
            "resources.num_workers",
            "9 exceeds the operator's max_workers (8)",
        ),
        (
            SMALL.format(target="redfl.examples.echo:EchoClient") + "colour = 1\n",
            None,
            "client.colour: unknown key",
        ),
        (
            SMALL.format(target="redfl.examples.echo:EchoClient")
            + '[strategy]\nname = "fedavgm"\nserver_momentum = "high"\n',
            None,
            "strategy.server_momentum: Input should be a valid number, got 'high'",
        ),
    ],
)
def test_bad_or_unsafe_configs_are_refused_naming_the_field(
    app: FastAPI, client: TestClient, config: str, field: str | None, message: str
) -> None:
    response = _create_run(client, bearer(app, "rita"), config)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert message in response.json()["detail"]
    assert not app.state.settings.runs_dir.exists()


def test_no_code_is_imported_when_a_run_is_queued(tmp_path: Path) -> None:
    package = tmp_path / "pkg" / "sentinel_pkg"
    package.mkdir(parents=True)
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    sys.path.insert(0, str(package.parent))
    try:
        app = make_app(tmp_path / "d", allowed_packages=("sentinel_pkg",))
        add_user(app, "rita", "researcher")
        with TestClient(app) as client:
            refused = _create_run(client, bearer(app, "rita"), SMALL.format(target="evil:C"))
            queued = _create_run(
                client, bearer(app, "rita"), SMALL.format(target="sentinel_pkg.mod:C")
            )
    finally:
        sys.path.remove(str(package.parent))
    assert (refused.status_code, queued.status_code) == (422, 201)
    assert not marker.exists() and "sentinel_pkg" not in sys.modules and "evil" not in sys.modules


def test_runs_in_a_project_need_membership(app: FastAPI, client: TestClient) -> None:
    add_user(app, "rob", "researcher")
    client.post("/api/projects", json={"name": "p"}, headers=bearer(app, "rita"))
    missing = _create_run(client, bearer(app, "rita"), project="nope")
    assert (missing.status_code, missing.json()["detail"]) == (
        422,
        "project: no such project 'nope'",
    )
    assert _create_run(client, bearer(app, "rob"), project="p").status_code == 403
    assert _create_run(client, bearer(app, "ada"), project="p").status_code == 201
    mine = _create_run(client, bearer(app, "rita"), project="p").json()
    assert mine["project"] == "p"
    listed = client.get("/api/runs", params={"project": "p"}, headers=bearer(app, "vic")).json()
    assert len(listed) == 2


def test_cancel_rules(app: FastAPI, client: TestClient) -> None:
    add_user(app, "rob", "researcher")
    rita = bearer(app, "rita")
    first, second = (_create_run(client, rita).json()["id"] for _ in range(2))
    assert client.post(f"/api/runs/{first}/cancel", headers=bearer(app, "rob")).status_code == 403
    assert client.post(f"/api/runs/{first}/cancel", headers=bearer(app, "vic")).status_code == 403
    done = client.post(f"/api/runs/{first}/cancel", headers=rita).json()
    assert (done["status"], done["cancel_requested"]) == ("cancelled", True)
    again = client.post(f"/api/runs/{first}/cancel", headers=rita)
    assert (again.status_code, again.json()["detail"]) == (
        409,
        f"run '{first}' is already cancelled",
    )
    with app.state.sessions() as session:
        Store(session).set_status(second, "running")
    marked = client.post(f"/api/runs/{second}/cancel", headers=bearer(app, "ada")).json()
    assert (marked["status"], marked["cancel_requested"]) == ("running", True)


def test_model_metrics_and_events_downloads(app: FastAPI, client: TestClient) -> None:
    vic = bearer(app, "vic")
    run_id = _create_run(client, bearer(app, "rita")).json()["id"]
    model = client.get(f"/api/runs/{run_id}/model", headers=vic)
    assert (model.status_code, model.json()["detail"]) == (404, f"run '{run_id}' has no model yet")
    folder = app.state.settings.runs_dir / run_id
    save_parameters(folder / "model.safetensors", {"w": np.arange(6.0).reshape(2, 3)}, {"r": 1})
    model = client.get(f"/api/runs/{run_id}/model", headers=vic)
    assert model.status_code == 200
    assert model.content == (folder / "model.safetensors").read_bytes()
    assert f"digits-fedavg-{run_id}.safetensors" in model.headers["content-disposition"]
    (tmp := folder / "copy.safetensors").write_bytes(model.content)
    assert load_parameters(tmp)[0]["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    with app.state.sessions() as session:
        store = Store(session)
        store.add_round_metric(run_id, 1, {"round": 1, "loss": 0.5, "metrics": {"eps": 1.0}})
        store.add_round_metric(run_id, 2, {"round": 2, "loss": 0.25, "accuracy": 0.75})
        store.append_event(run_id, "run_started", {"rounds": 20})
        store.append_event(run_id, "round_finished", {"round": 1})
    csv = client.get(f"/api/runs/{run_id}/metrics.csv", headers=vic)
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines() == [
        "round,sampled,succeeded,failed,seconds,train_loss,loss,accuracy,metrics.eps",
        "1,,,,,,0.5,,1.0",
        "2,,,,,,0.25,0.75,",
    ]
    as_json = client.get(f"/api/runs/{run_id}/metrics.json", headers=vic).json()
    assert [r["round"] for r in as_json] == [1, 2]
    events = client.get(f"/api/runs/{run_id}/events", params={"after": 0}, headers=vic).json()
    assert [(e["seq"], e["type"], e["data"]) for e in events] == [
        (1, "round_finished", {"round": 1})
    ]


def test_strategies_and_examples_are_listed(app: FastAPI, client: TestClient) -> None:
    vic = bearer(app, "vic")
    listed = client.get("/api/strategies", headers=vic).json()
    assert [s["name"] for s in listed] == list(STRATEGIES)
    fedavgm = next(s for s in listed if s["name"] == "fedavgm")
    assert fedavgm["cls"] == "FedAvgM" and "server_momentum" in fedavgm["parameters"]
    shown = client.get("/api/examples", headers=vic).json()
    assert [e["name"] for e in shown] == ["digits_fedavg", "ring_dsgd"]
    assert shown[0]["description"].startswith("The demo federation")


def test_bundled_examples_equal_the_repository_ones_and_pass_the_web_rules() -> None:
    for example in examples():
        assert example.config == (REPO / "examples" / f"{example.name}.toml").read_text()
        config = parse_web_config(example.config, "toml", Settings())
        assert config.client.target.startswith("redfl.examples.")


@pytest.fixture
def small_cap_client(tmp_path: Path) -> Iterator[tuple[FastAPI, TestClient]]:
    """An app whose bodies are capped at 2048 bytes."""
    app = make_app(tmp_path / "d", max_upload_bytes=2048)
    add_user(app, "rita", "researcher")
    with TestClient(app) as client:
        yield app, client


def test_bodies_over_the_cap_get_413(small_cap_client: tuple[FastAPI, TestClient]) -> None:
    app, client = small_cap_client
    rita = bearer(app, "rita")
    big = DEMO + "#" * 3000
    declared = _create_run(client, rita, big)
    assert (declared.status_code, declared.json()["detail"]) == (
        413,
        "request body over the 2048-byte limit",
    )
    payload = json.dumps({"config": big}).encode()
    chunked = client.post(
        "/api/runs",
        content=(payload[i : i + 500] for i in range(0, len(payload), 500)),
        headers={**rita, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert _create_run(client, rita).status_code == 201  # the demo fits


def test_the_api_on_postgresql(tmp_path: Path, postgres_server: PostgresServer) -> None:
    app = make_app(tmp_path / "d", database_url=create_database(postgres_server))
    for name, role in (("rita", "researcher"), ("vic", "viewer")):
        add_user(app, name, role)
    with TestClient(app) as client:
        login = client.post("/api/auth/login", json={"username": "rita", "password": PASSWORD})
        assert login.status_code == 200
        rita = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert client.post("/api/projects", json={"name": "p"}, headers=rita).status_code == 201
        run = _create_run(client, rita, project="p").json()
        with app.state.sessions() as session:
            Store(session).add_round_metric(run["id"], 1, {"round": 1, "accuracy": 0.5})
        got = client.get(f"/api/runs/{run['id']}", headers=bearer(app, "vic")).json()
        assert (got["project"], got["metrics"]) == ("p", [{"round": 1, "accuracy": 0.5}])
        assert got["created_at"].endswith("Z") or got["created_at"].endswith("+00:00")
        cancelled = client.post(f"/api/runs/{run['id']}/cancel", headers=rita).json()
        assert cancelled["status"] == "cancelled"
        assert client.get("/api/health").json()["database"] is True
