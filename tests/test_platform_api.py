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
    client: TestClient, headers: dict[str, str], config: str = DEMO, **extra: str | list[str]
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


DIGITS = (
    '[federation]\nname = "digits"\nrounds = 2\n'
    '[client]\ntarget = "redfl.examples.digits:DigitsClient"\nnum_clients = 4\n'
)


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ('[client.options]\nlr = "abc"\n', "client.options.lr", "Input should be a valid number"),
        ("[client.options]\ncolour = 1\n", "client.options.colour", "unknown key"),
        ("[client.options]\nepochs = 0\n", "client.options.epochs", "greater than or equal to 1"),
        (
            "[resources]\nworker = { CPU = 1000 }\n",
            "resources.worker",
            "the cluster cannot meet the resources asked for: asked {CPU: 1000}",
        ),
        (
            "[resources]\nworker = { GPU = 1 }\n",
            "resources.worker",
            "available {GPU: 0}",
        ),
        (
            "[resources]\nnum_workers = 8\n",
            "resources.num_workers",
            "asked {CPU: 4} in 4 bundle(s)",
        ),
    ],
)
def test_options_and_resources_are_checked_at_submission(
    tmp_path: Path, extra: str, field: str, message: str
) -> None:
    app = make_app(tmp_path / "d", ray_num_cpus=2)  # the embedded head will have 2 CPUs
    add_user(app, "rita", "researcher")
    with TestClient(app) as client:
        response = _create_run(client, bearer(app, "rita"), DIGITS + extra)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field
        assert message in response.json()["detail"]
        assert _create_run(client, bearer(app, "rita"), DIGITS).status_code == 201


def test_echo_options_are_checked_too(app: FastAPI, client: TestClient) -> None:
    config = SMALL.format(target="redfl.examples.echo:EchoClient") + "[client.options]\nsise = 3\n"
    response = _create_run(client, bearer(app, "rita"), config)
    assert (response.status_code, response.json()["field"]) == (422, "client.options.sise")


def test_operator_limits_on_cost_knobs_count_defaults_too(tmp_path: Path) -> None:
    app = make_app(tmp_path / "d", option_limits={"epochs": 3, "tile": 2})
    add_user(app, "rita", "researcher")
    rita = bearer(app, "rita")
    with TestClient(app) as client:
        for extra, field, detail in (
            ("[client.options]\nepochs = 1000\n", "client.options.epochs", "1000 exceeds"),
            ("", "client.options.epochs", "5 exceeds the operator's limit 3"),  # the default
            ("[client.options]\nepochs = 2\ntile = 3\n", "client.options.tile", "3 exceeds"),
        ):
            refused = _create_run(client, rita, DIGITS + extra)
            assert (refused.status_code, refused.json()["field"]) == (422, field)
            assert detail in refused.json()["detail"]
            assert "(option_limits." in refused.json()["detail"]
        fits = _create_run(client, rita, DIGITS + "[client.options]\nepochs = 3\n")
        assert fits.status_code == 201


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("a = " + "[" * 50_000 + "]" * 50_000, "toml"),
        ('{"a": ' + "[" * 50_000 + "]" * 50_000 + "}", "json"),
        ('{"client": ' + '{"a": ' * 100 + "1" + "}" * 101, "json"),
    ],
)
def test_configs_nested_deeply_are_refused_not_crashed_on(
    app: FastAPI, client: TestClient, text: str, fmt: str
) -> None:
    response = _create_run(client, bearer(app, "rita"), text, format=fmt)
    assert response.status_code == 422, response.text[:200]
    deep = "config: nested more than 64 levels deep"
    assert response.json() == {"detail": deep, "field": "config"}


def test_text_that_cannot_be_utf8_is_refused_and_the_reply_stays_json(
    app: FastAPI, client: TestClient
) -> None:
    config = json.dumps(
        {
            "client": {
                "target": "redfl.examples.digits:DigitsClient",
                "num_clients": 2,
                "options": {"\ud800": 1},
            }
        }
    )  # ensure_ascii: the lone surrogate travels as the escape \\ud800
    response = _create_run(client, bearer(app, "rita"), config, format="json")
    assert response.status_code == 422
    assert response.json()["field"] == "client.options"  # the key itself is what is bad
    raw = client.post(
        "/api/runs",
        content=b'{"config": "[client]", "tags": ["\\udfff"]}',
        headers={**bearer(app, "rita"), "Content-Type": "application/json"},
    )
    assert raw.status_code == 422 and raw.json()["field"].startswith("body.tags")


def test_runs_are_tagged_filtered_paged_and_counted(app: FastAPI, client: TestClient) -> None:
    rita, vic = bearer(app, "rita"), bearer(app, "vic")
    add_user(app, "rob", "researcher")
    made = [
        _create_run(client, rita, DEMO, tags=["baseline"]).json(),
        _create_run(client, rita, DEMO.replace("digits-fedavg", "digits-fast")).json(),
        _create_run(client, bearer(app, "rob"), DEMO, tags=["baseline", "lr-0.3"]).json(),
    ]
    assert made[0]["tags"] == ["baseline"] and made[0]["rounds_done"] == 0

    def listed(**params: object) -> tuple[list[str], str]:
        response = client.get("/api/runs", params=params, headers=vic)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()], response.headers["X-Total-Count"]

    newest = [r["id"] for r in reversed(made)]
    assert listed() == (newest, "3")
    assert listed(limit=1, offset=1) == (newest[1:2], "3")
    assert listed(limit=2, offset=2) == (newest[2:], "3")
    assert listed(tag="baseline") == ([newest[0], newest[2]], "2")
    assert listed(owner="rob") == ([newest[0]], "1")
    assert listed(q="FAST") == ([newest[1]], "1")
    assert listed(q="lr-0.3", status="queued") == ([newest[0]], "1")
    assert listed(status="running") == ([], "0")
    retag = client.put(f"/api/runs/{made[1]['id']}/tags", json={"tags": ["x", "x"]}, headers=rita)
    assert (retag.status_code, retag.json()["tags"]) == (200, ["x"])
    others = client.put(f"/api/runs/{made[2]['id']}/tags", json={"tags": []}, headers=rita)
    assert others.status_code == 403
    bad = client.put(f"/api/runs/{made[1]['id']}/tags", json={"tags": ["a b"]}, headers=rita)
    assert (bad.status_code, bad.json()["field"]) == (422, "body.tags.0")


def test_compare_lines_configs_up_and_names_the_differences(
    app: FastAPI, client: TestClient
) -> None:
    rita = bearer(app, "rita")
    first = _create_run(client, rita, DEMO).json()["id"]
    second = _create_run(client, rita, DEMO.replace("lr = 0.3", "lr = 0.1")).json()["id"]
    response = client.get("/api/runs/compare", params={"ids": f"{first},{second}"}, headers=rita)
    assert response.status_code == 200
    body = response.json()
    assert [r["id"] for r in body["runs"]] == [first, second]
    assert body["config"]["client.options.lr"] == [0.3, 0.1]
    assert body["config"]["strategy.name"] == ["fedavg", "fedavg"]
    assert body["config"]["federation.checkpoint_every"] == [0, 0]  # defaults filled in
    assert body["differing"] == ["client.options.lr"]
    missing = client.get("/api/runs/compare", params={"ids": f"{first},{'0' * 32}"}, headers=rita)
    assert missing.status_code == 404
    many = ",".join([first] * 9)
    assert client.get("/api/runs/compare", params={"ids": many}, headers=rita).status_code == 200
    too_many = ",".join(f"{i:032x}" for i in range(9))
    refused = client.get("/api/runs/compare", params={"ids": too_many}, headers=rita)
    assert (refused.status_code, refused.json()["detail"]) == (422, "ids: 1 to 8 run ids, got 9")


def test_stop_cancels_a_queued_run_and_marks_a_running_one(
    app: FastAPI, client: TestClient
) -> None:
    rita = bearer(app, "rita")
    queued, running = (_create_run(client, rita).json()["id"] for _ in range(2))
    assert client.post(f"/api/runs/{queued}/stop", headers=rita).json()["status"] == "cancelled"
    with app.state.sessions() as session:
        Store(session).set_status(running, "running")
    add_user(app, "rob", "researcher")
    assert client.post(f"/api/runs/{running}/stop", headers=bearer(app, "rob")).status_code == 403
    stopping = client.post(
        f"/api/runs/{running}/stop", json={"reason": "too slow"}, headers=bearer(app, "ada")
    ).json()
    assert (stopping["status"], stopping["stop_requested"], stopping["error"]) == (
        "running",
        True,
        "stopped by ada: too slow",
    )
    with app.state.sessions() as session:
        Store(session).end_run(running, "stopped", stopping["error"])
    again = client.post(f"/api/runs/{running}/stop", headers=rita)
    assert again.status_code == 409
    assert again.json()["detail"] == f"run '{running}' is already stopped"


def test_log_summary_and_failure_pages(app: FastAPI, client: TestClient) -> None:
    vic = bearer(app, "vic")
    run_id = _create_run(client, bearer(app, "rita")).json()["id"]
    empty = client.get(f"/api/runs/{run_id}/log", headers=vic).json()
    assert empty == {"offset": 0, "next": 0, "size": 0, "text": ""}
    folder = app.state.settings.runs_dir / run_id
    (folder / "run.log").write_bytes(b"line one\nline two\n" + "é\n".encode())
    tail = client.get(f"/api/runs/{run_id}/log", params={"offset": -4}, headers=vic).json()
    assert tail == {"offset": 17, "next": 21, "size": 21, "text": "\né\n"}
    head = client.get(f"/api/runs/{run_id}/log", params={"offset": 0, "limit": 9}, headers=vic)
    assert head.json()["text"] == "line one\n" and head.json()["next"] == 9
    (folder / "summary.json").write_text('{"status": "succeeded", "accuracy": 0.9}')
    detail = client.get(f"/api/runs/{run_id}", headers=vic).json()
    assert detail["summary"] == {"status": "succeeded", "accuracy": 0.9}
    with app.state.sessions() as session:
        for n in range(5):
            Store(session).add_failure(run_id, 1, f"client-{n}", "fit", "boom")
    page = client.get(
        f"/api/runs/{run_id}/failures", params={"offset": 3, "limit": 10}, headers=vic
    )
    assert page.headers["X-Total-Count"] == "5"
    assert [f["node"] for f in page.json()] == ["client-3", "client-4"]
    with app.state.sessions() as session:
        for n in range(4):
            Store(session).append_event(run_id, "clients_progress", {"done": n})
    events = client.get(f"/api/runs/{run_id}/events", params={"after": 0, "limit": 2}, headers=vic)
    assert [e["seq"] for e in events.json()] == [1, 2]
