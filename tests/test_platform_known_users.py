"""Authenticated requests trust a user's row for a bounded time, and tokens once verified.

Changes through the API apply at the next request; changes made elsewhere (here: straight
in the store, as another server on the same database would) within ``user_cache_seconds``.
The WebSocket checks its token the same way, with the same cache.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from platform_app import add_user, bearer, make_app, store_run
from starlette.websockets import WebSocketDisconnect

from redfl.platform import security
from redfl.platform.api.known_users import KnownUsers
from redfl.platform.models import User
from redfl.platform.security import InvalidToken, TokenService
from redfl.platform.settings import Settings, SettingsError
from redfl.platform.store import Store

CREATE_PROJECT = ("/api/projects", {"name": "p1", "description": ""})


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _app(tmp_path: Path, clock: Clock, seconds: float = 5.0) -> FastAPI:
    app = make_app(tmp_path / "data", user_cache_seconds=seconds)
    app.state.known_users = KnownUsers(seconds, clock=clock)
    for name, role in (("ada", "admin"), ("rita", "researcher")):
        add_user(app, name, role)
    return app


def _set_role_in_store(app: FastAPI, name: str, role: str) -> None:
    with app.state.sessions() as session:
        Store(session).set_role(name, role)


def _me(client: TestClient, headers: dict[str, str]) -> tuple[int, str]:
    response = client.get("/api/auth/me", headers=headers)
    return response.status_code, response.json().get("role", response.json().get("detail"))


def test_a_role_change_through_the_api_applies_at_the_next_request(tmp_path: Path) -> None:
    app = _app(tmp_path, Clock())
    rita, ada = bearer(app, "rita"), bearer(app, "ada")
    with TestClient(app) as client:
        assert _me(client, rita) == (200, "researcher")  # now cached
        changed = client.patch("/api/users/rita", json={"role": "viewer"}, headers=ada)
        assert changed.status_code == 200
        assert _me(client, rita) == (200, "viewer")
        path, body = CREATE_PROJECT
        refused = client.post(path, json=body, headers=rita)
        assert (refused.status_code, refused.json()["detail"]) == (
            403,
            "needs role 'researcher', you are 'viewer'",
        )
        assert client.delete("/api/users/rita", headers=ada).status_code == 204
        assert _me(client, rita) == (401, "invalid token")


def test_a_change_made_elsewhere_applies_within_the_bound(tmp_path: Path) -> None:
    clock = Clock()
    app = _app(tmp_path, clock, seconds=5.0)
    rita = bearer(app, "rita")
    with TestClient(app) as client:
        assert _me(client, rita) == (200, "researcher")
        _set_role_in_store(app, "rita", "viewer")
        clock.now += 4.9
        assert _me(client, rita) == (200, "researcher")  # still trusted: inside the bound
        clock.now += 0.1
        assert _me(client, rita) == (200, "viewer")  # re-read at the bound
        with app.state.sessions() as session:
            Store(session).delete_user("rita")
        clock.now += 5.0
        assert _me(client, rita) == (401, "invalid token")


def _follow(client: TestClient, run_id: str, headers: dict[str, str]) -> tuple[int, str]:
    """Follow the run's WebSocket until the server closes it; the close code and reason."""
    token = headers["Authorization"].removeprefix("Bearer ")
    with client.websocket_connect(f"/api/runs/{run_id}/ws?token={token}") as ws:
        while True:
            try:
                ws.receive_json()
            except WebSocketDisconnect as closed:
                return closed.code, closed.reason


def test_the_websocket_trusts_and_refuses_users_as_the_http_routes_do(tmp_path: Path) -> None:
    clock = Clock()
    app = _app(tmp_path, clock, seconds=5.0)
    add_user(app, "vic", "viewer")
    add_user(app, "val", "viewer")
    vic, val, ada = bearer(app, "vic"), bearer(app, "val"), bearer(app, "ada")
    with app.state.sessions() as session:
        store = Store(session)
        run_id = store_run(store, None)
        store.end_run(run_id, "cancelled")
    with TestClient(app) as client:
        assert _me(client, vic) == (200, "viewer")  # now cached
        assert _follow(client, run_id, vic) == (1000, "")
        with app.state.sessions() as session:
            Store(session).delete_user("vic")  # elsewhere: the cached row is still trusted
        assert _me(client, vic) == (200, "viewer")
        assert _follow(client, run_id, vic) == (1000, "")
        clock.now += 5.0
        assert _me(client, vic) == (401, "invalid token")
        assert _follow(client, run_id, vic) == (4401, "invalid token")
        assert _follow(client, run_id, val) == (1000, "")  # cached too
        assert client.delete("/api/users/val", headers=ada).status_code == 204
        assert _follow(client, run_id, val) == (4401, "invalid token")  # at once, as on HTTP
        assert _me(client, val) == (401, "invalid token")


def test_a_zero_bound_reads_the_user_on_every_request(tmp_path: Path) -> None:
    app = _app(tmp_path, Clock(), seconds=0.0)
    rita = bearer(app, "rita")
    with TestClient(app) as client:
        assert _me(client, rita) == (200, "researcher")
        _set_role_in_store(app, "rita", "viewer")
        assert _me(client, rita) == (200, "viewer")


def test_a_row_read_before_a_clear_is_not_kept() -> None:
    clock = Clock()
    known = KnownUsers(5.0, clock=clock)
    generation = known.generation()
    stale = User(id=3, name="rita", role="admin")
    known.clear()  # a change landed while the row was being read
    known.put(stale, generation=generation)
    assert known.get(3) is None
    known.put(User(id=3, name="rita", role="viewer"), generation=known.generation())
    cached = known.get(3)
    assert cached is not None and cached.role == "viewer"
    clock.now += 5.0
    assert known.get(3) is None


def test_a_verified_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = TokenService(b"k" * 32, access_seconds=60)
    token = tokens.issue_access(user_id=7, name="ada", role="admin")
    claims = tokens.decode_access(token)
    assert tokens.decode_access(token) is claims  # the second time from memory
    later = claims.expires.timestamp()
    monkeypatch.setattr(security, "time", types.SimpleNamespace(time=lambda: later))
    with pytest.raises(InvalidToken, match="token expired"):
        tokens.decode_access(token)
    other = TokenService(b"x" * 32, access_seconds=60)
    with pytest.raises(InvalidToken, match="invalid token"):
        other.decode_access(token)  # remembered per service: another key still refuses it


def test_a_negative_bound_is_refused_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "platform.toml").write_text("user_cache_seconds = -1\n")
    with pytest.raises(SettingsError, match=r"user_cache_seconds: .*greater than or equal to 0"):
        Settings.load(tmp_path)
    assert Settings.load(tmp_path / "empty").user_cache_seconds == 5.0
