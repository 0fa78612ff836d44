"""Sites from the platform: its own federation home, sites added (the credential bundle
returned once), listed and revoked by admins; runs with ``runtime = "sites"`` submitted on
that home; each site's state in a run, read from the run folder's events."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from fastapi.testclient import TestClient
from platform_app import (  # noqa: F401  (fixtures)
    SITES_RUN,
    app_fixture,
    bearer,
    client_fixture,
    store_run,
)
from stand_in_events import site_failure, write_event

from redfl.platform.store import Store
from redfl.platform.untrusted import parse_web_config
from redfl.run.api import run
from redfl.trust import Bundle, TrustHome, UntrustedError, Verifier


def _add(client: TestClient, app: FastAPI, name: str, who: str = "ada") -> Any:
    return client.post("/api/sites", json={"name": name}, headers=bearer(app, who))


def test_a_site_is_added_with_its_bundle_shown_once_and_listed_without_it(
    app: FastAPI, client: TestClient
) -> None:
    reply = _add(client, app, "alpha")
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert (body["name"], body["state"]) == ("alpha", "valid")
    bundle = Bundle(
        key_pem=body["bundle"]["key"],
        cert_pem=body["bundle"]["cert"],
        ca_pem=body["bundle"]["ca"],
        fields=body["bundle"]["fields"],
    )
    assert (bundle.identity.name, bundle.identity.kind) == ("alpha", "site")
    assert f"{bundle.identity.serial:x}" == body["serial"]
    assert bundle.fields == {"server_url": "https://127.0.0.1:8443"}
    assert bundle.ca_pem == TrustHome(app.state.settings.sites_home).ca_pem
    listed = client.get("/api/sites", headers=bearer(app, "ada"))
    assert [(s["name"], s["state"]) for s in listed.json()] == [("alpha", "valid")]
    assert "PRIVATE KEY" not in listed.text
    # once: the site's private key is kept nowhere on the server
    key_line = bundle.key_pem.splitlines()[1]
    data = Path(app.state.settings.data_dir)
    holding = [p for p in data.rglob("*") if p.is_file() and key_line.encode() in p.read_bytes()]
    assert holding == []
    again = _add(client, app, "alpha")
    assert again.status_code == 409
    assert "'alpha' already has a valid credential" in again.json()["detail"]
    bad = _add(client, app, "-alpha")
    assert (bad.status_code, bad.json()["field"]) == (422, "body.name")


def test_revoking_a_site_refuses_it_at_once_and_frees_its_name(
    app: FastAPI, client: TestClient
) -> None:
    issued = _add(client, app, "beta").json()["bundle"]
    cert = x509.load_pem_x509_certificate(issued["cert"].encode())
    der = cert.public_bytes(serialization.Encoding.DER)
    verifier = Verifier.of(TrustHome(app.state.settings.sites_home), kinds=["site"])
    assert verifier.identity(der).name == "beta"  # what a sites run's server checks
    revoked = client.request(
        "DELETE", "/api/sites/beta", json={"reason": "laptop stolen"}, headers=bearer(app, "ada")
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked: laptop stolen"
    with pytest.raises(UntrustedError, match="revoked"):
        verifier.identity(der)  # at once: the same verifier, its next check
    listed = client.get("/api/sites", headers=bearer(app, "ada")).json()
    assert [(s["name"], s["state"]) for s in listed] == [("beta", "revoked: laptop stolen")]
    twice = client.delete("/api/sites/beta", headers=bearer(app, "ada"))
    assert twice.status_code == 409
    assert "holds only revoked credentials" in twice.json()["detail"]
    missing = client.delete("/api/sites/gamma", headers=bearer(app, "ada"))
    assert (missing.status_code, missing.json()["detail"]) == (404, "site 'gamma' does not exist")
    renewed = _add(client, app, "beta")
    assert renewed.status_code == 201
    assert renewed.json()["serial"] != revoked.json()["serial"]


def test_only_admins_manage_sites(app: FastAPI, client: TestClient) -> None:
    for who in ("rita", "vic"):
        assert _add(client, app, "delta", who).status_code == 403
        assert client.get("/api/sites", headers=bearer(app, who)).status_code == 403
        assert client.delete("/api/sites/delta", headers=bearer(app, who)).status_code == 403
    assert client.get("/api/sites").status_code == 401
    assert client.post("/api/sites", json={"name": "delta"}).status_code == 401


def test_a_sites_run_is_submitted_on_the_platforms_home_and_listen(
    app: FastAPI, client: TestClient
) -> None:
    made = client.post("/api/runs", json={"config": SITES_RUN}, headers=bearer(app, "rita"))
    assert made.status_code == 201, made.text
    settings = app.state.settings
    config = parse_web_config(SITES_RUN, "toml", settings)
    assert config.sites is not None
    assert config.sites.home == str(settings.sites_home.resolve())
    assert config.sites.listen == settings.sites_listen
    assert config.federation.runtime == "sites"
    for extra, field in (('home = "/etc"', "sites.home"), ('listen = "0.0.0.0:9"', "sites.listen")):
        text = f"{SITES_RUN}{extra}\n"
        refused = client.post("/api/runs", json={"config": text}, headers=bearer(app, "rita"))
        assert (refused.status_code, refused.json()["field"]) == (422, field), refused.text
    listen = SITES_RUN + 'listen = "127.0.0.1:8443"\n'
    same = client.post("/api/runs", json={"config": listen}, headers=bearer(app, "rita"))
    assert same.status_code == 201


def test_each_sites_state_in_a_run_is_read_from_its_events(
    app: FastAPI, client: TestClient
) -> None:
    runs_dir = app.state.settings.runs_dir
    with app.state.sessions() as session:
        store = Store(session)
        queued = store_run(store, None, runs_dir=runs_dir, config=SITES_RUN)
        plain = store_run(store, None, runs_dir=runs_dir, config="[client]\n")
    states = client.get(f"/api/runs/{queued}/sites", headers=bearer(app, "vic")).json()
    assert [(s["name"], s["connected"], s["rounds"], s["last_seen"]) for s in states] == [
        ("alpha", False, 0, None),
        ("beta", False, 0, None),
    ]
    assert client.get(f"/api/runs/{plain}/sites", headers=bearer(app, "vic")).json() == []
    # the same config simulated in process writes a run folder with the [sites] table
    local = SITES_RUN.replace('runtime = "sites"', 'runtime = "local"')
    folder = runs_dir / queued
    assert run(tomllib.loads(local), out=folder).status == "succeeded"
    write_event(folder, type="site_joined", time=100.0, site="alpha", address="10.0.0.1:5000")
    write_event(folder, type="site_round", time=101.0, site="alpha", round=1)
    write_event(folder, type="site_round", time=102.0, site="alpha", round=2)
    site_failure(folder, "beta", 1, 102.5)
    states = client.get(f"/api/runs/{queued}/sites", headers=bearer(app, "vic")).json()
    assert states == [
        {
            "name": "alpha",
            "connected": True,
            "address": "10.0.0.1:5000",
            "last_seen": 102.0,
            "rounds": 2,
            "failures": 0,
            "left": None,
        },
        {
            "name": "beta",
            "connected": False,
            "address": "",
            "last_seen": None,
            "rounds": 0,
            "failures": 1,
            "left": None,
        },
    ]
    assert client.get("/api/runs/nope/sites", headers=bearer(app, "vic")).status_code == 404
