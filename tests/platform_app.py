"""Helpers for the platform's API tests: an app on a fresh data folder, users and tokens."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from redfl.platform.api.app import create_app
from redfl.platform.logs import LOG, JsonFormatter
from redfl.platform.security import hash_password
from redfl.platform.settings import Settings
from redfl.platform.store import Store

PASSWORD = "correct horse battery"
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


@pytest.fixture(name="app")
def app_fixture(tmp_path: Path) -> FastAPI:
    """An app with an admin ``ada``, a researcher ``rita`` and a viewer ``vic``."""
    made = make_app(tmp_path / "data")
    for name, role in (("ada", "admin"), ("rita", "researcher"), ("vic", "viewer")):
        add_user(made, name, role)
    return made


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
