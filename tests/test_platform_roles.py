"""The role matrix, derived from the route table.

Every route of the app x (anonymous, expired token, token signed with another key, revoked
token (an admin's, logged out), viewer, researcher, admin) gets the status its rule
expects. A route without a rule fails the test,
and so does a rule without a route. Each request acts on objects made for it alone (owned by
the researcher), so the status depends only on the caller's identity.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from platform_app import add_user, make_app, store_run
from starlette.websockets import WebSocketDisconnect

from redfl.platform.security import TokenService
from redfl.platform.sites import ensure_sites_home
from redfl.platform.store import Store
from redfl.run.folder import save_parameters
from redfl.runtime.sites.admin import issue_site

IDENTITIES = ("anonymous", "expired", "foreign", "revoked", "viewer", "researcher", "admin")
RANK = {"viewer": 0, "researcher": 1, "admin": 2}
_count = itertools.count()

Setup = Callable[[FastAPI], tuple[dict[str, Any], Any]]
"""Make what one request needs: (path parameters, JSON body or None)."""


def _none(_: FastAPI) -> tuple[dict[str, Any], Any]:
    return {}, None


def _fresh_run(app: FastAPI, with_model: bool = False) -> str:
    runs_dir = app.state.settings.runs_dir
    with app.state.sessions() as session:
        store = Store(session)
        run_id = store_run(store, store.require_user("researcher").id, runs_dir=runs_dir)
    folder = runs_dir / run_id
    folder.mkdir(parents=True)
    if with_model:
        save_parameters(folder / "model.safetensors", {"w": np.zeros(2)}, {})
    return run_id


def _run(app: FastAPI) -> tuple[dict[str, Any], Any]:
    return {"run_id": _fresh_run(app)}, None


def _finished_run(app: FastAPI) -> tuple[dict[str, Any], Any]:
    run_id = _fresh_run(app)
    with app.state.sessions() as session:
        Store(session).cancel_queued(run_id)
    return {"run_id": run_id}, None


def _run_with_model(app: FastAPI) -> tuple[dict[str, Any], Any]:
    return {"run_id": _fresh_run(app, with_model=True)}, None


def _failed_deployment(app: FastAPI) -> tuple[dict[str, Any], Any]:
    """A deployment (of the researcher) that failed: nothing of it is on Ray Serve."""
    run_id = _fresh_run(app, with_model=True)
    with app.state.sessions() as session:
        store = Store(session)
        made = store.create_deployment(run_id, store.require_user("researcher").id, 1, 1)
        store.set_deployment_status(made.id, "failed", "for the matrix")
    return {"deployment_id": made.id}, {"inputs": [[0.0, 0.0]]}


def _new_site(_: FastAPI) -> tuple[dict[str, Any], Any]:
    return {}, {"name": f"site{next(_count)}"}


def _site(app: FastAPI) -> tuple[dict[str, Any], Any]:
    name = f"site{next(_count)}"
    issue_site(ensure_sites_home(app.state.settings), name, "https://127.0.0.1:8443")
    return {"name": name}, None


def _tagged_run(app: FastAPI) -> tuple[dict[str, Any], Any]:
    return {"run_id": _fresh_run(app)}, {"tags": ["checked"]}


def _compared(app: FastAPI) -> tuple[dict[str, Any], Any]:
    return {"query": f"?ids={_fresh_run(app)},{_fresh_run(app)}"}, None


def _password(app: FastAPI) -> tuple[dict[str, Any], Any]:
    params, _ = _user(app)
    return params, {"password": "a new password"}


def _project(app: FastAPI) -> tuple[dict[str, Any], Any]:
    with app.state.sessions() as session:
        store = Store(session)
        project = store.create_project(f"p{next(_count)}", "", store.require_user("researcher"), [])
    return {"project_id": project.id}, {"description": "changed"}


def _user(app: FastAPI) -> tuple[dict[str, Any], Any]:
    name = f"u{next(_count)}"
    add_user(app, name, "viewer", password="not used here")
    return {"name": name}, {"role": "researcher"}


def _new_project(_: FastAPI) -> tuple[dict[str, Any], Any]:
    return {}, {"name": f"new{next(_count)}"}


def _new_user(_: FastAPI) -> tuple[dict[str, Any], Any]:
    return {}, {"name": f"new{next(_count)}", "role": "viewer", "password": "long enough"}


def _new_run(_: FastAPI) -> tuple[dict[str, Any], Any]:
    config = '[client]\ntarget = "redfl.examples.echo:EchoClient"\nnum_clients = 2\n'
    return {}, {"config": config}


STREAMS = 0
"""The "status" of a WebSocket that stays open and streams (it sends a change made after
it opened)."""


@dataclass(frozen=True)
class Rule:
    """Who may call a route (``public`` or the lowest role) and the status they then get."""

    needs: str
    status: int
    setup: Setup = _none


RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/api/openapi.json"): Rule("public", 200),
    ("POST", "/api/auth/login"): Rule(
        "public", 401, lambda _: ({}, {"username": "nobody", "password": "wrong one"})
    ),
    ("POST", "/api/auth/refresh"): Rule("public", 401, lambda _: ({}, {"refresh_token": "x"})),
    ("POST", "/api/auth/logout"): Rule("public", 204, lambda _: ({}, {"refresh_token": "x"})),
    ("GET", "/api/auth/me"): Rule("viewer", 200),
    ("GET", "/api/users"): Rule("admin", 200),
    ("POST", "/api/users"): Rule("admin", 201, _new_user),
    ("PATCH", "/api/users/{name}"): Rule("admin", 200, _user),
    ("DELETE", "/api/users/{name}"): Rule("admin", 204, _user),
    ("PUT", "/api/users/{name}/password"): Rule("admin", 204, _password),
    ("GET", "/api/projects"): Rule("viewer", 200),
    ("POST", "/api/projects"): Rule("researcher", 201, _new_project),
    ("GET", "/api/projects/{project_id}"): Rule("viewer", 200, _project),
    ("PATCH", "/api/projects/{project_id}"): Rule("researcher", 200, _project),
    ("DELETE", "/api/projects/{project_id}"): Rule("researcher", 204, _project),
    ("POST", "/api/runs"): Rule("researcher", 201, _new_run),
    ("GET", "/api/runs"): Rule("viewer", 200),
    ("GET", "/api/runs/compare"): Rule("viewer", 200, _compared),
    ("GET", "/api/runs/{run_id}"): Rule("viewer", 200, _run),
    ("PUT", "/api/runs/{run_id}/tags"): Rule("researcher", 200, _tagged_run),
    ("POST", "/api/runs/{run_id}/cancel"): Rule("researcher", 200, _run),
    ("POST", "/api/runs/{run_id}/stop"): Rule("researcher", 200, _run),
    ("GET", "/api/runs/{run_id}/model"): Rule("viewer", 200, _run_with_model),
    ("GET", "/api/runs/{run_id}/metrics.csv"): Rule("viewer", 200, _run),
    ("GET", "/api/runs/{run_id}/metrics.json"): Rule("viewer", 200, _run),
    ("GET", "/api/runs/{run_id}/events"): Rule("viewer", 200, _run),
    ("GET", "/api/runs/{run_id}/failures"): Rule("viewer", 200, _run),
    ("GET", "/api/runs/{run_id}/log"): Rule("viewer", 200, _run),
    ("WEBSOCKET", "/api/runs/{run_id}/ws"): Rule("viewer", 1000, _finished_run),
    ("WEBSOCKET", "/api/live/runs"): Rule("viewer", STREAMS),
    # a queued run: 409 once the caller may deploy (deploying itself is in
    # test_platform_deployments.py, on Ray Serve)
    ("POST", "/api/runs/{run_id}/deployments"): Rule("researcher", 409, _run_with_model),
    ("GET", "/api/deployments"): Rule("viewer", 200),
    ("GET", "/api/deployments/{deployment_id}"): Rule("viewer", 200, _failed_deployment),
    ("DELETE", "/api/deployments/{deployment_id}"): Rule("researcher", 204, _failed_deployment),
    # a failed deployment: 409 once the caller may predict
    ("POST", "/api/deployments/{deployment_id}/predict"): Rule("viewer", 409, _failed_deployment),
    ("GET", "/api/sites"): Rule("admin", 200),
    ("POST", "/api/sites"): Rule("admin", 201, _new_site),
    ("DELETE", "/api/sites/{name}"): Rule("admin", 200, _site),
    ("GET", "/api/runs/{run_id}/sites"): Rule("viewer", 200, _run),
    # the matrix's app operates no edge deployment: 404 once the caller may ask (the edge
    # routes against a real edge deployment are in test_platform_edge.py)
    ("GET", "/api/edge/deployments"): Rule("viewer", 200),
    ("GET", "/api/edge/jobs"): Rule("viewer", 404),
    ("GET", "/api/edge/jobs/{job_id}"): Rule("viewer", 404, lambda _: ({"job_id": "j-1"}, None)),
    ("POST", "/api/edge/jobs"): Rule("researcher", 404, lambda _: ({}, {"job": {"name": "j"}})),
    ("POST", "/api/edge/jobs/{job_id}/abort"): Rule(
        "researcher", 404, lambda _: ({"job_id": "j-1"}, {"reason": "matrix"})
    ),
    ("GET", "/api/strategies"): Rule("viewer", 200),
    ("GET", "/api/examples"): Rule("viewer", 200),
    ("GET", "/api/health"): Rule("public", 200),
    ("GET", "/metrics"): Rule("public", 200),
    ("GET", "/"): Rule("public", 200),
    ("GET", "/static/{name}"): Rule("public", 200, lambda _: ({"name": "app.js"}, None)),
}


def expected(rule: Rule, identity: str) -> int:
    """The status ``identity`` must get from a route with ``rule``."""
    if rule.needs == "public":
        return rule.status
    if identity not in RANK:
        return 401
    return rule.status if RANK[identity] >= RANK[rule.needs] else 403


def _walk(routes: list[Any]) -> list[Any]:
    """The routes, with included routers opened (FastAPI >= 0.13x keeps them nested)."""
    flat = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        flat.extend(_walk(list(inner.routes)) if inner is not None else [route])
    return flat


def route_table(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves (HEAD and OPTIONS aside); a WebSocket
    route is listed as method ``WEBSOCKET``, so it needs a rule too."""
    found = []
    for route in _walk(list(app.routes)):
        if "WebSocket" in type(route).__name__:
            found.append(("WEBSOCKET", str(route.path)))
        methods = getattr(route, "methods", None) or ()
        for method in sorted(methods):
            if method not in ("HEAD", "OPTIONS"):
                found.append((method, str(route.path)))
    return found


def _headers(app: FastAPI, identity: str) -> dict[str, str]:
    if identity == "anonymous":
        return {}
    with app.state.sessions() as session:
        user = Store(session).require_user(
            {"expired": "ada", "foreign": "ada", "revoked": "ada"}.get(identity, identity)
        )
    if identity == "expired":
        old = datetime.now(UTC) - timedelta(hours=2)
        token = app.state.tokens.issue_access(user.id, user.name, user.role, now=old)
    elif identity == "foreign":
        token = TokenService(b"another key" * 4, 900).issue_access(user.id, user.name, user.role)
    else:
        token = app.state.tokens.issue_access(user.id, user.name, user.role)
    if identity == "revoked":  # logged out, as POST /api/auth/logout does it
        claims = app.state.tokens.decode_access(token)
        with app.state.sessions() as session:
            Store(session).revoke_token_id(claims.family, claims.expires)
        app.state.revoked.load(app.state.sessions)
    return {"Authorization": f"Bearer {token}"}


def _websocket_close_code(
    client: TestClient, app: FastAPI, path: str, rule: Rule, identity: str
) -> int:
    """The close code the server ends a WebSocket of ``identity`` with (1000 after it sent
    the finished run's status: accepted), or :data:`STREAMS` when it streamed a change."""
    params, _ = rule.setup(app)
    token = _headers(app, identity).get("Authorization", "Bearer ").removeprefix("Bearer ")
    with client.websocket_connect(path.format(**params) + f"?token={token}") as ws:
        if rule.status == STREAMS:
            changed = _fresh_run(app)
            try:
                while changed not in {r["id"] for r in ws.receive_json()["runs"]}:
                    pass
            except WebSocketDisconnect as closed:  # refused
                return int(closed.code)
            return STREAMS
        while True:
            try:
                message = ws.receive_json()
            except WebSocketDisconnect as closed:
                return int(closed.code)
            assert message["type"] in ("run_cancelled", "status")


@pytest.fixture(scope="module")
def matrix_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """One app with users named after the roles (the login limit raised for the matrix)."""
    app = make_app(Path(tmp_path_factory.mktemp("roles")), login_max_failures=1000)
    for role in ("viewer", "researcher", "admin"):
        add_user(app, role, role)
    add_user(app, "ada", "admin")
    return app


def test_every_route_has_a_rule_and_every_rule_a_route(matrix_app: FastAPI) -> None:
    table = route_table(matrix_app)
    missing = [r for r in table if r not in RULES]
    stale = [r for r in RULES if r not in table]
    assert missing == [], f"routes without a rule in RULES: {missing}"
    documented = [
        (method.upper(), path)
        for path, operations in matrix_app.openapi()["paths"].items()
        for method in operations
    ]
    assert set(documented) <= set(table)  # the walk sees every documented route
    assert stale == [], f"rules for routes that do not exist: {stale}"


def test_role_matrix(matrix_app: FastAPI) -> None:
    wrong = []
    checked = 0
    with TestClient(matrix_app) as client:
        for method, path in route_table(matrix_app):
            rule = RULES.get((method, path))
            if rule is None:
                continue  # reported by the test above
            if method == "WEBSOCKET":
                for identity in IDENTITIES:
                    code = _websocket_close_code(client, matrix_app, path, rule, identity)
                    want = {401: 4401, 403: 4403}.get(expected(rule, identity), rule.status)
                    checked += 1
                    if code != want:
                        wrong.append(f"WEBSOCKET {path} as {identity}: {code} != {want}")
                continue
            for identity in IDENTITIES:
                params, body = rule.setup(matrix_app)
                url = path.format(**params) + params.get("query", "")
                response = client.request(
                    method, url, json=body, headers=_headers(matrix_app, identity)
                )
                want = expected(rule, identity)
                checked += 1
                if response.status_code != want:
                    wrong.append(f"{method} {path} as {identity}: {response.status_code} != {want}")
    assert wrong == []
    assert checked == len(RULES) * len(IDENTITIES)
