"""Metrics, request ids and JSON logs, health, security headers, CORS; a real server."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from platform_app import (  # noqa: F401  (fixtures)
    add_user,
    app_fixture,
    bearer,
    client_fixture,
    log_lines_fixture,
    make_app,
    store_run,
)
from waiting import free_port, wait_until

from redfl.platform.api.health import ray_status
from redfl.platform.api.middleware import SECURITY_HEADERS
from redfl.platform.db import make_engine, session_factory, sqlite_url
from redfl.platform.store import Store
from redfl.runtime.jobs import pid_alive, read_head

CONFIG = '[client]\ntarget = "redfl.examples.echo:EchoClient"\nnum_clients = 2\n'


def _sample(text: str, name: str, labels: str = "") -> float:
    """The value of one sample of the Prometheus text ``text``."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    found = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(found) == 1, f"{prefix!r} not in metrics"
    return float(found[0].split()[-1])


def test_http_and_run_metrics(app: FastAPI, client: TestClient) -> None:
    vic = bearer(app, "vic")
    for _ in range(2):
        assert client.get("/api/runs/" + "a" * 32, headers=vic).status_code == 404
    assert client.get("/no/such/path").status_code == 404
    client.post("/api/runs", json={"config": CONFIG}, headers=bearer(app, "rita"))
    app.state.metrics.record_round(0.3)
    app.state.metrics.record_round(2.0)
    app.state.metrics.record_client_failures(3)
    text = client.get("/metrics").text
    route = 'method="GET",route="/api/runs/{run_id}",status="404"'
    assert _sample(text, "redfl_http_requests_total", route) == 2.0
    unmatched = 'method="GET",route="<unmatched>",status="404"'
    assert _sample(text, "redfl_http_requests_total", unmatched) == 1.0
    latency = 'method="GET",route="/api/runs/{run_id}"'
    assert _sample(text, "redfl_http_request_duration_seconds_count", latency) == 2.0
    assert _sample(text, "redfl_runs", 'status="queued"') == 1.0
    assert _sample(text, "redfl_runs", 'status="running"') == 0.0
    assert _sample(text, "redfl_rounds_completed_total") == 2.0
    assert _sample(text, "redfl_client_failures_total") == 3.0
    assert _sample(text, "redfl_round_seconds_sum") == pytest.approx(2.3)
    assert _sample(text, "redfl_round_seconds_bucket", 'le="0.5"') == 1.0


def test_request_ids_and_json_access_logs(client: TestClient, log_lines: io.StringIO) -> None:
    given = client.get("/api/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    made = client.get("/api/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(made.headers["X-Request-ID"]) == 32 and made.headers["X-Request-ID"] != "bad id"
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    requests = [x for x in lines if x["event"] == "request"]
    assert [(x["request_id"], x["route"], x["status"]) for x in requests] == [
        ("abc-123", "/api/health", 200),
        (made.headers["X-Request-ID"], "/api/health", 200),
    ]
    assert all(x["level"] == "info" and x["ms"] >= 0 for x in requests)


def test_security_headers_on_every_kind_of_response(app: FastAPI, client: TestClient) -> None:
    small = make_app(app.state.settings.data_dir.parent / "small", max_upload_bytes=1024)
    with TestClient(small) as small_client:
        too_big = small_client.post("/api/runs", content=b"x" * 2000)
    responses = {
        "ok": client.get("/api/health"),
        "unauthorized": client.get("/api/runs"),
        "not found": client.get("/nowhere"),
        "too large": too_big,
    }
    assert [r.status_code for r in responses.values()] == [200, 401, 404, 413]
    for kind, response in responses.items():
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (kind, name)
    assert "frame-ancestors 'none'" in SECURITY_HEADERS["Content-Security-Policy"]


def test_cors_is_off_by_default_and_on_for_named_origins(tmp_path: Path) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with TestClient(make_app(tmp_path / "a")) as client:
        response = client.options("/api/runs", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        plain = client.get("/api/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in plain.headers
    allowed = make_app(tmp_path / "b", cors_origins=("https://ui.example",))
    with TestClient(allowed) as client:
        ok = client.get("/api/health", headers={"Origin": "https://ui.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ui.example"
        other = client.get("/api/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_health_is_degraded_without_ray_or_the_database(tmp_path: Path) -> None:
    with socket.socket() as listener:  # stands in for a reachable Ray
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        app = make_app(tmp_path / "d", ray_address=f"127.0.0.1:{port}")
        with TestClient(app) as client:
            body = client.get("/api/health").json()
            assert (body["status"], body["database"], body["ray"]["reachable"]) == (
                "ok",
                True,
                True,
            )
        assert ray_status(f"ray://127.0.0.1:{port}").reachable
    closed = free_port()
    status = ray_status(f"127.0.0.1:{closed}")
    assert not status.reachable and status.detail.startswith("cannot connect")
    assert ray_status("not-an-address").detail == "address is not host:port"
    for ray_address in (f"127.0.0.1:{closed}", None):  # a cluster down; no embedded head
        app = make_app(tmp_path / "d", ray_address=ray_address)
        with TestClient(app) as client:
            served = client.get("/api/health")
            assert (served.status_code, served.json()["status"]) == (200, "degraded")
            assert served.json()["ray"]["reachable"] is False
            app.state.engine = make_engine(f"postgresql+psycopg://x@127.0.0.1:{closed}/none")
            down = client.get("/api/health")
            assert (down.status_code, down.json()["database"], down.json()["status"]) == (
                503,
                False,
                "degraded",
            )


REDFL = str(Path(sys.executable).parent / "redfl")
"""The console script of this environment."""


def _serve(data: Path, port: int, stderr: Path, stdout: Path) -> subprocess.Popen[bytes]:
    args = [REDFL, "serve", "--port", str(port), "--data", str(data), "--docs"]
    return subprocess.Popen(args, stderr=stderr.open("wb"), stdout=stdout.open("wb"))


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _ok(url: str) -> bool:
    try:
        return bool(httpx.get(url, timeout=1).json()["status"] == "ok")
    except (httpx.HTTPError, ValueError):
        return False


def test_redfl_serve_says_where_it_is_and_its_head_stops_within_seconds(tmp_path: Path) -> None:
    data, port, log, out = tmp_path / "data", free_port(), tmp_path / "stderr", tmp_path / "out"
    created = subprocess.run(
        [REDFL, "users", "create", "ada", "--role", "admin", "--data", str(data)],
        input=b"served password\n",
        capture_output=True,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    server = _serve(data, port, log, out)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _healthy(base + "/api/health"), 60), log.read_text()
        said = out.read_text()
        assert f"redfl platform: {base}/ (API {base}/api, schema {base}/api/openapi.json" in said
        assert f"docs {base}/api/docs" in said
        assert f"data folder: {data.resolve()}" in said
        assert f"stop it with 'redfl head stop --data {data}'" in said
        assert wait_until(lambda: _ok(base + "/api/health"), 120), log.read_text()[-2000:]
        docs = httpx.get(base + "/api/docs")
        assert docs.status_code == 200 and "/api/docs/swagger-ui-bundle.js" in docs.text
        script = httpx.get(base + "/api/docs/swagger-ui-bundle.js")
        assert script.status_code == 200 and len(script.content) > 100_000
        for n in range(3):  # a client on this machine that claims to be elsewhere
            httpx.post(
                base + "/api/auth/login",
                json={"username": "ada", "password": "wrong password"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            )
        login = httpx.post(
            base + "/api/auth/login", json={"username": "ada", "password": "served password"}
        )
        assert login.status_code == 200
        token = login.json()["access_token"]
        runs = httpx.get(base + "/api/runs", headers={"Authorization": f"Bearer {token}"})
        assert (runs.status_code, runs.json()) == (200, [])
    finally:
        server.terminate()
        server.wait(30)
        head = read_head(data)
        stopping = subprocess.run(
            [REDFL, "head", "stop", "--data", str(data)], capture_output=True, text=True
        )
    assert head is not None and stopping.returncode == 0, stopping.stderr
    seconds = float(stopping.stdout.split(" in ")[1].split(" s")[0])
    assert seconds < 10 and not pid_alive(head.pid) and read_head(data) is None
    with session_factory(make_engine(sqlite_url(data)))() as session:
        addresses = {a.address for a in Store(session).login_attempts()}
    assert addresses == {"127.0.0.1"}  # X-Forwarded-For from an untrusted peer is ignored
    assert (data / ".gitignore").read_text().splitlines()[-1] == "*"
    secret = (data / "jwt-secret").read_text().strip()
    assert stat.S_IMODE(os.stat(data / "jwt-secret").st_mode) == 0o600
    logged = log.read_text()
    assert secret not in logged and "served password" not in logged
    lines = [json.loads(x) for x in logged.splitlines() if x.startswith("{")]
    assert [x["route"] for x in lines if x.get("event") == "request"][-2:] == [
        "/api/auth/login",
        "/api/runs",
    ]


def test_runs_by_status_follow_the_store(app: FastAPI, client: TestClient) -> None:
    with app.state.sessions() as session:
        store = Store(session)
        run_ids = [store_run(store, None) for _ in range(3)]
        store.set_status(run_ids[-1], "running")
    text = client.get("/metrics").text
    assert _sample(text, "redfl_runs", 'status="queued"') == 2.0
    assert _sample(text, "redfl_runs", 'status="running"') == 1.0
