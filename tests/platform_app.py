"""Helpers for the platform's API tests: an app on a fresh data folder, users, tokens and
stored runs."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from redfl.platform.api.app import create_app
from redfl.platform.logs import LOG, JsonFormatter
from redfl.platform.security import TokenService, hash_password
from redfl.platform.settings import Settings
from redfl.platform.store import Store, new_run_id
from redfl.run.api import run

PASSWORD = "correct horse battery"
DIGITS_RUN: dict[str, Any] = {
    "federation": {"rounds": 2, "runtime": "local", "name": "digits"},
    "client": {
        "target": "redfl.examples.digits:DigitsClient",
        "num_clients": 3,
        "options": {"epochs": 2, "lr": 0.3},
    },
}
"""A small digits run (in process): a model to serve."""
SITES_RUN = """[federation]
name = "two-sites"
rounds = 2
runtime = "sites"
[client]
target = "redfl.examples.echo:EchoClient"
num_clients = 2
[sites]
expected = ["alpha", "beta"]
"""
"""A web config of a run across the sites ``alpha`` and ``beta``."""
_HASH: dict[str, str] = {}


def make_app(data_dir: Path, **settings: Any) -> FastAPI:
    """The app on ``data_dir`` (SQLite) with the given settings."""
    return create_app(Settings(data_dir=data_dir, **settings))


def add_user(app: FastAPI, name: str, role: str, password: str = PASSWORD) -> int:
    """Create a user in the app's store; their id (hashing ``PASSWORD`` only once)."""
    if password not in _HASH:
        _HASH[password] = hash_password(password)
    with app.state.sessions() as session:
        return Store(session).create_user(name, role, _HASH[password]).id


def bearer(app: FastAPI, name: str) -> dict[str, str]:
    """An ``Authorization`` header with a fresh access token of user ``name``."""
    with app.state.sessions() as session:
        user = Store(session).require_user(name)
    token = app.state.tokens.issue_access(user.id, user.name, user.role)
    return {"Authorization": f"Bearer {token}"}


def bad_tokens(app: FastAPI, name: str) -> dict[str, dict[str, str]]:
    """Headers with no, an expired, a forged and a revoked (logged out) token of user
    ``name``, by those names."""
    with app.state.sessions() as session:
        user = Store(session).require_user(name)
    old = datetime.now(UTC) - timedelta(hours=2)
    expired = app.state.tokens.issue_access(user.id, user.name, user.role, now=old)
    forged = TokenService(b"another key" * 4, 900).issue_access(user.id, user.name, user.role)
    revoked = app.state.tokens.issue_access(user.id, user.name, user.role)
    claims = app.state.tokens.decode_access(revoked)
    with app.state.sessions() as session:
        Store(session).revoke_token_id(claims.family, claims.expires)
    app.state.revoked.load(app.state.sessions)
    return {
        "none": {},
        "expired": {"Authorization": f"Bearer {expired}"},
        "forged": {"Authorization": f"Bearer {forged}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
    }


def store_run(
    store: Store,
    owner_id: int | None,
    *,
    project_id: int | None = None,
    rounds: int = 1,
    runs_dir: Path | str = "/nowhere",
    config: str = "",
    name: str = "demo",
) -> str:
    """Add a queued run (TOML ``config``, folder ``<runs_dir>/<id>``, not created) to
    ``store``; its id."""
    run_id = new_run_id()
    store.create_run(
        run_id=run_id,
        name=name,
        owner_id=owner_id,
        project_id=project_id,
        config_text=config,
        config_format="toml",
        rounds=rounds,
        run_dir=str(Path(runs_dir) / run_id),
    )
    return run_id


def trained_run(app: FastAPI, owner: str, train: bool = True) -> str:
    """A run of ``owner`` stored as succeeded, its folder trained for real (:data:`DIGITS_RUN`)
    when ``train``; its id."""
    runs_dir = app.state.settings.runs_dir
    with app.state.sessions() as session:
        store = Store(session)
        run_id = store_run(store, store.require_user(owner).id, runs_dir=runs_dir, rounds=2)
        store.record_status(run_id, "running")
        store.record_status(run_id, "succeeded")
    if train:
        assert run(DIGITS_RUN, out=runs_dir / run_id).status == "succeeded"
    return run_id


def make_team_app(data_dir: Path) -> FastAPI:
    """The app on ``data_dir`` with an admin ``ada``, a researcher ``rita`` and a viewer
    ``vic``."""
    made = make_app(data_dir)
    for name, role in (("ada", "admin"), ("rita", "researcher"), ("vic", "viewer")):
        add_user(made, name, role)
    return made


@pytest.fixture(name="app")
def app_fixture(tmp_path: Path) -> FastAPI:
    """:func:`make_team_app` on a fresh data folder."""
    return make_team_app(tmp_path / "data")


@pytest.fixture(name="client")
def client_fixture(app: FastAPI) -> Iterator[TestClient]:
    """A test client of ``app`` (requests come from address ``testclient``)."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(name="log_lines")
def log_lines_fixture() -> Iterator[io.StringIO]:
    """The platform's JSON log lines written during the test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    yield stream
    LOG.removeHandler(handler)
