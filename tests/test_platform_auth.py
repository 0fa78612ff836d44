"""Login, tokens, the login rate limit and its audit trail, the JWT secret, ``redfl users``."""

from __future__ import annotations

import io
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from platform_app import (  # noqa: F401  (fixtures)
    PASSWORD,
    add_user,
    app_fixture,
    bearer,
    client_fixture,
    log_lines_fixture,
    make_app,
)
from typer.testing import CliRunner
from waiting import wait_until

from redfl.cli import app as cli_app
from redfl.platform.api.app import housekeeping
from redfl.platform.db import make_engine, session_factory, sqlite_url, upgrade
from redfl.platform.security import TokenService, verify_password
from redfl.platform.settings import SettingsError, load_or_create_secret
from redfl.platform.store import Store


def _login(client: TestClient, name: str, password: str = PASSWORD) -> dict[str, object]:
    response = client.post("/api/auth/login", json={"username": name, "password": password})
    return {"status": response.status_code, **response.json()}


def test_login_gives_a_short_lived_access_token_and_a_refresh_token(
    app: FastAPI, client: TestClient
) -> None:
    body = _login(client, "rita")
    assert (body["status"], body["role"], body["expires_in"]) == (200, "researcher", 900)
    claims = jwt.decode(str(body["access_token"]), options={"verify_signature": False})
    assert (claims["name"], claims["role"], claims["typ"]) == ("rita", "researcher", "access")
    assert claims["exp"] - claims["iat"] == 900
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert client.get("/api/auth/me", headers=headers).json()["name"] == "rita"
    with app.state.sessions() as session:
        attempts = Store(session).login_attempts()
    assert [(a.username, a.success, a.reason) for a in attempts] == [("rita", True, "ok")]


def test_bad_and_unknown_logins_are_refused_alike_logged_and_stored(
    app: FastAPI, client: TestClient, log_lines: io.StringIO
) -> None:
    wrong = _login(client, "rita", "not the password")
    unknown = _login(client, "nobody", "whatever-pass")
    assert wrong == unknown == {"status": 401, "detail": "invalid username or password"}
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    lines = [x for x in lines if x["event"] == "login_failed"]
    assert all(len(x["request_id"]) == 32 for x in lines)
    assert [(x["event"], x["username"], x["reason"]) for x in lines] == [
        ("login_failed", "rita", "bad password"),
        ("login_failed", "nobody", "unknown user"),
    ]
    assert "not the password" not in log_lines.getvalue()
    with app.state.sessions() as session:
        reasons = [(a.username, a.address) for a in Store(session).login_attempts()]
    assert reasons == [("nobody", "testclient"), ("rita", "testclient")]


def _fail_from(app: FastAPI, name: str, address: str, times: int, age: float = 0.0) -> None:
    """Store ``times`` failed logins of ``name`` from ``address``, ``age`` seconds old."""
    with app.state.sessions() as session:
        store = Store(session)
        for _ in range(times):
            store.record_login(name, address, False, "bad password")
        if age:
            for attempt in store.login_attempts(times):
                attempt.created_at = datetime.now(UTC) - timedelta(seconds=age)
            session.commit()


def test_failures_lock_a_user_out_of_that_address_only(app: FastAPI) -> None:
    _fail_from(app, "rita", "10.1.1.1", 5)
    with TestClient(app, client=("10.1.1.1", 1)) as attacker:
        locked = attacker.post("/api/auth/login", json={"username": "Rita", "password": PASSWORD})
        assert (locked.status_code, locked.json()["detail"]) == (
            429,
            "too many failed logins; try again later",
        )
        assert 295 <= int(locked.headers["Retry-After"]) <= 300
        assert _login(attacker, "vic")["status"] == 200  # others log in from there
    with TestClient(app, client=("10.2.2.2", 1)) as elsewhere:
        assert _login(elsewhere, "rita")["status"] == 200  # rita, from where she did not fail


def test_a_refused_attempt_is_no_failure_and_the_lock_ends_on_time(app: FastAPI) -> None:
    _fail_from(app, "rita", "10.1.1.1", 5, age=290)  # they leave the window in 10 s
    with TestClient(app, client=("10.1.1.1", 1)) as client:
        for _ in range(20):  # an attacker who keeps trying extends nothing
            refused = _login(client, "rita", "guess-guess")
            assert refused["status"] == 429
        retry = client.post("/api/auth/login", json={"username": "rita", "password": PASSWORD})
        assert 1 <= int(retry.headers["Retry-After"]) <= 10
        with app.state.sessions() as session:
            store = Store(session)
            assert store.failed_logins(datetime.now(UTC) - timedelta(seconds=300)) == 5
            for attempt in store.login_attempts(100):  # the window passes for every attempt
                attempt.created_at -= timedelta(seconds=11)
            session.commit()
        assert _login(client, "rita")["status"] == 200


def test_failures_from_one_address_lock_that_address(tmp_path: Path) -> None:
    app = make_app(tmp_path / "d", login_max_address_failures=5)
    add_user(app, "vic", "viewer")
    with TestClient(app, client=("10.1.1.1", 1)) as attacker:
        for name in ("a1", "a2", "a3", "a4", "a5"):
            assert _login(attacker, name, "guess-guess")["status"] == 401
        assert _login(attacker, "vic")["status"] == 429
    with TestClient(app, client=("10.2.2.2", 1)) as elsewhere:
        assert _login(elsewhere, "vic")["status"] == 200


@pytest.mark.parametrize(
    ("proxies", "counted_from"),
    [((), "127.0.0.1"), (("127.0.0.0/8",), "203.0.113.7")],
)
def test_forwarded_for_counts_only_from_a_trusted_proxy(
    tmp_path: Path, proxies: tuple[str, ...], counted_from: str
) -> None:
    app = make_app(tmp_path / "d", trusted_proxies=proxies)
    add_user(app, "rita", "researcher")
    with TestClient(app, client=("127.0.0.1", 1)) as client:
        for n in range(5):  # a new forged address each time
            client.post(
                "/api/auth/login",
                json={"username": "rita", "password": "guess-guess"},
                headers={"X-Forwarded-For": f"203.0.113.{n + 3}, 127.0.0.5"},
            )
        with app.state.sessions() as session:
            addresses = {a.address for a in Store(session).login_attempts()}
    if proxies:
        assert addresses == {f"203.0.113.{n}" for n in range(3, 8)} and counted_from in addresses
    else:
        assert addresses == {counted_from}  # the header was ignored: all from the peer


def test_old_login_attempts_are_deleted(app: FastAPI) -> None:
    _fail_from(app, "rita", "10.1.1.1", 3, age=31 * 86_400)
    _fail_from(app, "vic", "10.1.1.1", 1)
    assert housekeeping(app) == 3
    with app.state.sessions() as session:
        assert [a.username for a in Store(session).login_attempts()] == ["vic"]


def test_failures_older_than_the_window_do_not_count(tmp_path: Path) -> None:
    app = make_app(tmp_path / "d", login_window_seconds=1, login_max_failures=1)
    add_user(app, "rita", "researcher")
    with TestClient(app) as client:
        assert _login(client, "rita", "bad-password")["status"] == 401
        assert _login(client, "rita")["status"] == 429
        with app.state.sessions() as session:  # age the stored attempts past the window
            for attempt in Store(session).login_attempts():
                attempt.created_at = datetime.now(UTC) - timedelta(seconds=5)
            session.commit()
        assert _login(client, "rita")["status"] == 200


def _me(client: TestClient, access: object) -> int:
    response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {access}"})
    return int(response.status_code)


def test_refresh_tokens_are_single_use_and_logout_revokes(client: TestClient) -> None:
    first = _login(client, "vic")
    second = client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200 and second.json()["username"] == "vic"
    token = second.json()["refresh_token"]
    headers = {"Authorization": f"Bearer {second.json()['access_token']}"}
    gone = client.post("/api/auth/logout", json={"refresh_token": token}, headers=headers)
    assert gone.status_code == 204
    assert client.post("/api/auth/refresh", json={"refresh_token": token}).status_code == 401
    refused = client.get("/api/auth/me", headers=headers)  # the access token died with it
    assert (refused.status_code, refused.json()["detail"]) == (401, "token revoked")
    assert _me(client, first["access_token"]) == 401  # the whole login is over
    assert _me(client, _login(client, "vic")["access_token"]) == 200  # a new login is not


def test_logout_with_the_access_token_alone_ends_the_login(client: TestClient) -> None:
    pair = _login(client, "vic")
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    assert client.post("/api/auth/logout", headers=headers).status_code == 204
    assert _me(client, pair["access_token"]) == 401
    again = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 401


def test_reusing_a_spent_refresh_token_revokes_its_successors(client: TestClient) -> None:
    stolen = _login(client, "vic")
    other_login = _login(client, "vic")
    fresh = client.post("/api/auth/refresh", json={"refresh_token": stolen["refresh_token"]})
    assert fresh.status_code == 200  # the user refreshed; the thief replays the old token
    replay = client.post("/api/auth/refresh", json={"refresh_token": stolen["refresh_token"]})
    assert replay.status_code == 401
    successor = client.post(
        "/api/auth/refresh", json={"refresh_token": fresh.json()["refresh_token"]}
    )
    assert successor.status_code == 401
    assert _me(client, fresh.json()["access_token"]) == 401
    assert _me(client, other_login["access_token"]) == 200  # another login is untouched


def test_a_revocation_made_by_another_server_applies_within_the_poll(tmp_path: Path) -> None:
    first = make_app(tmp_path / "d", revocation_poll_seconds=0.2)
    add_user(first, "vic", "viewer")
    second = make_app(tmp_path / "d", revocation_poll_seconds=0.2)  # same database
    with TestClient(first) as one, TestClient(second) as two:
        pair = _login(one, "vic")
        assert _me(two, pair["access_token"]) == 200
        one.post("/api/auth/logout", json={"refresh_token": pair["refresh_token"]})
        assert _me(one, pair["access_token"]) == 401  # at once where it was made
        assert wait_until(lambda: _me(two, pair["access_token"]) == 401, 5)


def test_user_names_are_unique_ignoring_case(app: FastAPI, client: TestClient) -> None:
    admin = bearer(app, "ada")
    body = {"name": "Rita", "role": "viewer", "password": "long enough"}
    taken = client.post("/api/users", json=body, headers=admin)
    assert (taken.status_code, taken.json()["detail"]) == (
        409,
        "user 'Rita' already exists (as 'rita')",
    )
    assert _login(client, "RITA")["username"] == "rita"


def test_expired_foreign_and_stale_tokens_are_refused(app: FastAPI, client: TestClient) -> None:
    with app.state.sessions() as session:
        rita = Store(session).require_user("rita")
    old = datetime.now(UTC) - timedelta(hours=1)
    expired = app.state.tokens.issue_access(rita.id, "rita", "researcher", now=old)
    foreign = TokenService(b"x" * 64, 900).issue_access(rita.id, "rita", "researcher")
    for token, detail in ((expired, "token expired"), (foreign, "invalid token")):
        response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert (response.status_code, response.json()["detail"]) == (401, detail)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    headers = bearer(app, "rita")
    admin = bearer(app, "ada")
    assert client.delete("/api/users/rita", headers=admin).status_code == 204
    assert client.get("/api/auth/me", headers=headers).status_code == 401  # user gone


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        (
            "/api/users",
            {"name": "nina", "role": "viewer", "password": "hunter2", "colour": "red"},
            "body.password: String should have at least 8 characters (got a hidden value); "
            "body.colour: unknown key",
        ),
        (
            "/api/users",
            {"name": "ni na", "role": "boss", "password": 12345678},
            "body.name: String should match pattern '^[A-Za-z0-9_.@-]+$' (got 'ni na'); "
            "body.role: Input should be 'admin', 'researcher' or 'viewer' (got 'boss'); "
            "body.password: Input should be a valid string (got a hidden value)",
        ),
        (
            "/api/auth/refresh",
            {"refresh_token": ["hunter2"]},
            "body.refresh_token: Input should be a valid string",
        ),
        (
            "/api/projects",
            {"name": "p", "description": "x" * 10_001},
            "body.description: String should have at most 10000 characters (got 10001 characters)",
        ),
    ],
)
def test_invalid_bodies_get_one_line_naming_each_field_without_secrets(
    app: FastAPI, client: TestClient, path: str, body: dict[str, object], detail: str
) -> None:
    response = client.post(path, json=body, headers=bearer(app, "ada"))
    assert response.status_code == 422
    assert response.json() == {"detail": detail, "field": detail.split(":", 1)[0]}
    assert "hunter2" not in response.text and "12345678" not in response.text


def test_a_body_sent_as_text_is_not_repeated(client: TestClient) -> None:
    text = json.dumps({"username": "rita", "password": "hunter2 and more"})
    response = client.post("/api/auth/login", content=text)  # no JSON content type
    assert (response.status_code, response.json()["field"]) == (422, "body")
    assert response.json()["detail"] == (
        "body: Input should be a valid dictionary or object to extract fields from "
        "(got a hidden value)"
    )
    assert "hunter2" not in response.text


def test_invalid_queries_name_the_parameter_and_the_value(app: FastAPI, client: TestClient) -> None:
    response = client.get("/api/runs", params={"limit": 5000}, headers=bearer(app, "vic"))
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": "query.limit: Input should be less than or equal to 1000 (got '5000')",
            "field": "query.limit",
        },
    )


def test_the_schema_documents_the_422_reply_as_it_is(client: TestClient) -> None:
    schema = client.get("/api/openapi.json").json()
    login = schema["paths"]["/api/auth/login"]["post"]["responses"]["422"]
    ref = login["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    reply = schema["components"]["schemas"][ref]
    assert reply["required"] == ["detail"]
    assert reply["properties"]["detail"]["type"] == "string"
    assert "ValidationError" not in schema["components"]["schemas"]


def test_the_jwt_secret_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    key = load_or_create_secret(tmp_path / "d")
    path = tmp_path / "d" / "jwt-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    assert len(key) == 64 and load_or_create_secret(tmp_path / "d") == key
    os.chmod(path, 0o644)
    with pytest.raises(SettingsError, match=r"mode 0644 lets others read the JWT secret"):
        load_or_create_secret(tmp_path / "d")


def _user_hash(data: Path, name: str) -> str | None:
    engine = make_engine(sqlite_url(data))
    upgrade(engine)
    with session_factory(engine)() as session:
        user = Store(session).user_by_name(name)
        return None if user is None else f"{user.role} {user.password_hash}"


def test_users_create_reads_the_password_from_stdin(tmp_path: Path) -> None:
    data = tmp_path / "d"
    runner = CliRunner()
    args = ["users", "create", "ada", "--role", "admin", "--data", str(data)]
    done = runner.invoke(cli_app, args, input="long enough pw\n")
    assert (done.exit_code, done.output) == (0, "created user 'ada' with role admin\n")
    stored = _user_hash(data, "ada")
    assert stored is not None and stored.startswith("admin $argon2id$")
    assert verify_password(stored.split(" ", 1)[1], "long enough pw")
    again = runner.invoke(cli_app, args, input="long enough pw\n")
    assert again.exit_code == 2 and "redfl: error: user 'ada' already exists" in again.output


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--role", "root"], "long enough pw\n", "--role: must be one of admin, researcher"),
        (["--role", "viewer"], "short\n", "password: must be 8 to 1024 characters, got 5"),
        (["--role", "viewer"], "", "password: must be 8 to 1024 characters, got 0"),
        (["--role", "viewer", "--database-url", "mysql://h/d"], "long enough pw\n", "'mysql'"),
    ],
)
def test_users_create_refuses_bad_input(
    tmp_path: Path, args: list[str], stdin: str, message: str
) -> None:
    result = CliRunner().invoke(
        cli_app, ["users", "create", "bob", "--data", str(tmp_path), *args], input=stdin
    )
    assert result.exit_code == 2
    assert result.output.startswith("redfl: error: ") and message in result.output
    assert _user_hash(tmp_path, "bob") is None


def test_users_create_prompts_twice_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["first password", "other password"])
    monkeypatch.setattr("redfl.platform.cli._stdin_is_terminal", lambda: True)
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    runner = CliRunner()
    args = ["users", "create", "bob", "--role", "viewer", "--data", str(tmp_path)]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 2 and "the two entries differ" in result.output
    answers = iter(["same password", "same password"])
    assert runner.invoke(cli_app, args).exit_code == 0


def test_db_upgrade_reports_the_revision(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["db", "upgrade", "--data", str(tmp_path / "d")])
    assert (result.exit_code, result.output) == (0, "database at revision 0004\n")
    assert (tmp_path / "d" / "redfl.db").exists()


def test_users_passwd_replaces_the_password(tmp_path: Path) -> None:
    data, runner = tmp_path / "d", CliRunner()
    create = ["users", "create", "ada", "--role", "viewer", "--data", str(data)]
    assert runner.invoke(cli_app, create, input="first password\n").exit_code == 0
    passwd = ["users", "passwd", "ada", "--data", str(data)]
    done = runner.invoke(cli_app, passwd, input="second password\n")
    assert (done.exit_code, done.output) == (0, "password of 'ada' changed\n")
    stored = _user_hash(data, "ada")
    assert stored is not None and verify_password(stored.split(" ", 1)[1], "second password")
    missing = runner.invoke(cli_app, ["users", "passwd", "bob", "--data", str(data)], input="x" * 9)
    assert missing.exit_code == 2 and "user 'bob' does not exist" in missing.output
