"""Served models on real Ray Serve (the session's Ray): predictions over HTTP equal the local
hook's, tokens, 4xx answers, batching, a killed replica replaced, list and stop."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner
from waiting import free_port, wait_until

from redfl.cli import app
from redfl.core.config import ConfigError
from redfl.data.digits import load_digits_arrays
from redfl.run.api import run
from redfl.run.deployments import KEY_FILE, TOKEN_FILE, DeploymentStore
from redfl.run.folder import load_parameters
from redfl.run.serving import (
    Deployed,
    ServeOptions,
    deploy_run,
    issue_token,
    list_deployments,
    load_run,
    predict,
    revoke_tokens,
    stop_deployment,
)
from redfl.runtime.serving import DEPLOYMENT, deployment_states
from redfl.runtime.serving_tokens import TokenKey

REPO = Path(__file__).resolve().parents[1]


def digits_config(target: str, rounds: int, clients: int) -> dict[str, Any]:
    return {
        "federation": {"rounds": rounds, "runtime": "local"},
        "client": {"target": target, "num_clients": clients, "options": {"epochs": 2}},
    }


@dataclass
class Served:
    home: Path
    port: int
    digits_run: Path
    digits: Deployed
    cnn: Deployed


@pytest.fixture(scope="module")
def served(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from ray import serve

    root = tmp_path_factory.mktemp("serving")
    digits_run = run(
        digits_config("redfl.examples.digits:DigitsClient", 3, 4), out=root / "digits-run"
    ).folder
    cnn_run = run(
        digits_config("redfl.examples.torch_digits:TorchDigitsClient", 1, 2), out=root / "cnn-run"
    ).folder
    home, port = root / "home", free_port()
    common = {"replica_cpus": 0.25, "port": port, "max_rows": 64}
    digits = deploy_run(
        digits_run, ServeOptions.of(name="digits", replicas=2, max_batch=8, **common), home=home
    )
    cnn = deploy_run(  # a long batch wait: requests sent together are predicted together
        cnn_run, ServeOptions.of(name="cnn", batch_wait_s=0.5, **common), home=home
    )
    yield Served(home, port, digits_run, digits, cnn)
    serve.shutdown()  # type: ignore[no-untyped-call]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(deployed: Deployed, rows: Any, token: str | None = None) -> httpx.Response:
    token = deployed.token.token if token is None else token
    assert deployed.url is not None
    return httpx.post(deployed.url, json={"inputs": rows}, headers=bearer(token), timeout=60)


def health(deployed: Deployed, token: str | None = None) -> httpx.Response:
    token = deployed.token.token if token is None else token
    return httpx.get(f"{deployed.record.url}/health", headers=bearer(token), timeout=60)


def digits_rows(count: int, start: int = 0) -> np.ndarray:
    x, _ = load_digits_arrays()
    return np.array(x[start : start + count])


def test_predictions_over_http_equal_the_local_hook(served: Served) -> None:
    parameters, _ = load_parameters(served.digits_run / "model.safetensors")
    local = load_run(served.digits_run).predictor
    rows = digits_rows(5)
    reply = post(served.digits, rows.tolist())
    assert reply.status_code == 200, reply.text
    outputs = np.asarray(reply.json()["outputs"], dtype=np.float32)
    np.testing.assert_array_equal(outputs, local(parameters, rows))
    assert served.digits.url == f"http://127.0.0.1:{served.port}/digits/predict"


def test_the_torch_cnn_over_http_equals_its_local_hook(served: Served) -> None:
    served_cnn = load_run(served.cnn.record.run)
    rows = digits_rows(4, start=100)
    reply = post(served.cnn, rows.tolist())
    assert reply.status_code == 200, reply.text
    outputs = np.asarray(reply.json()["outputs"], dtype=np.float32)
    expected = served_cnn.predictor(served_cnn.parameters, rows)
    np.testing.assert_allclose(outputs, expected, rtol=1e-6, atol=1e-7)
    assert (outputs.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_requests_sent_together_are_batched_each_answered_with_its_own_rows(
    served: Served,
) -> None:
    served_cnn = load_run(served.cnn.record.run)
    before = health(served.cnn).json()
    requests = [digits_rows(3, start=10 * i) for i in range(6)]
    with ThreadPoolExecutor(len(requests)) as pool:
        replies = list(pool.map(lambda rows: post(served.cnn, rows.tolist()), requests))
    for reply, rows in zip(replies, requests, strict=True):
        assert reply.status_code == 200, reply.text
        expected = served_cnn.predictor(served_cnn.parameters, rows)
        np.testing.assert_allclose(reply.json()["outputs"], expected, rtol=1e-5, atol=1e-6)
    after = health(served.cnn).json()
    assert after["requests"] - before["requests"] == 6
    assert after["batches"] - before["batches"] < 6  # one replica, a 0.5 s batch window


def test_every_route_wants_a_valid_token_of_this_deployment(served: Served) -> None:
    digits = served.digits
    rows = digits_rows(1).tolist()
    assert digits.url is not None
    missing = httpx.post(digits.url, json={"inputs": rows}, timeout=60)
    assert missing.status_code == 401
    assert missing.json() == {"detail": "missing token: send 'Authorization: Bearer <token>'"}
    assert missing.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert httpx.get(f"{digits.record.url}/health", timeout=60).status_code == 401
    forged = TokenKey.generate().issue("digits", ttl=600.0).token
    assert post(digits, rows, forged).json() == {"detail": "bad signature"}
    key = TokenKey.from_pem((served.home / "digits" / KEY_FILE).read_bytes())
    expired = key.issue("digits", ttl=60.0, now=time.time() - 120.0).token
    reply = post(digits, rows, expired)
    assert (reply.status_code, reply.json()) == (401, {"detail": "token expired"})
    other = post(digits, rows, served.cnn.token.token)  # signed by the other one's key
    assert (other.status_code, other.json()) == (401, {"detail": "bad signature"})
    aimed = post(digits, rows, key.issue("cnn", ttl=600.0).token)
    assert (aimed.status_code, aimed.json()) == (401, {"detail": "token for another deployment"})
    assert post(digits, rows).status_code == 200


def test_a_revoked_token_is_refused_by_every_replica_and_others_still_work(
    served: Served,
) -> None:
    extra = issue_token("digits", days=1.0, home=served.home)
    assert post(served.digits, digits_rows(1).tolist(), extra.token).status_code == 200
    revoke_tokens("digits", [extra.token_id], home=served.home)
    for _ in range(6):  # two replicas: each must refuse it
        reply = post(served.digits, digits_rows(1).tolist(), extra.token)
        assert (reply.status_code, reply.json()) == (401, {"detail": "token revoked"})
    assert post(served.digits, digits_rows(1).tolist()).status_code == 200
    record = DeploymentStore(served.home).load("digits")
    assert [t.revoked for t in record.tokens] == [False, True]


@pytest.mark.parametrize(
    ("rows", "detail"),
    [
        ([[0.0] * 63], "body.inputs.0: a row must hold 64 numbers"),
        ([[0.0] * 63 + ["x"]], "body.inputs.0.63: Input should be a valid number (got 'x')"),
        ([[0.0] * 64] * 65, "body.inputs: at most 64 rows per request, got 65"),
        ([], "body.inputs: needs at least one row"),
    ],
)
def test_bad_inputs_are_422_naming_the_problem(
    served: Served, rows: list[list[Any]], detail: str
) -> None:
    reply = post(served.digits, rows)
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith(detail), reply.text


def test_limits_are_checked_before_the_body_and_nothing_stops_a_replica(served: Served) -> None:
    digits = served.digits
    assert digits.url is not None
    replicas_before = set(_replica_actors("digits"))
    too_big = httpx.post(
        digits.url,
        content=b"[" * (1 << 21),
        headers={**bearer(digits.token.token), "content-type": "application/json"},
        timeout=60,
    )
    assert too_big.status_code == 413
    assert too_big.json()["detail"].startswith("body: at most 1048576 bytes per request")
    not_json = httpx.post(digits.url, content=b"{", headers=bearer(digits.token.token))
    assert not_json.status_code == 422
    assert httpx.get(digits.url, headers=bearer(digits.token.token)).status_code == 405
    nowhere = httpx.get(f"{digits.record.url}/nowhere", headers=bearer(digits.token.token))
    assert nowhere.status_code == 404
    assert post(digits, digits_rows(2).tolist()).status_code == 200
    assert set(_replica_actors("digits")) == replicas_before


def test_predicting_from_inside_the_cluster_takes_no_token_and_checks_the_same(
    served: Served,
) -> None:
    rows = digits_rows(3, start=50)
    outputs = predict("digits", rows)
    over_http = post(served.digits, rows.tolist()).json()["outputs"]
    np.testing.assert_array_equal(outputs, np.asarray(over_http))
    with pytest.raises(ValueError, match=r"^422: body\.inputs\.0: a row must hold 64 numbers"):
        predict("digits", np.zeros((1, 3)))
    with pytest.raises(KeyError, match="no served model named 'nope'"):
        predict("nope", rows)


def _replica_actors(name: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::{name}#{DEPLOYMENT}#"
    actors = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in actors if a["name"].startswith(prefix))


def test_a_killed_replica_is_replaced_and_requests_succeed_again(served: Served) -> None:
    import ray

    before = _replica_actors("digits")
    assert len(before) == 2
    victim = ray.get_actor(before[0], namespace="serve")
    ray.kill(victim, no_restart=True)

    def replaced() -> bool:
        now = _replica_actors("digits")
        state = deployment_states().get("digits")
        return before[0] not in now and len(now) == 2 and state is not None and state.running == 2

    assert wait_until(replaced, 90.0), (_replica_actors("digits"), deployment_states())
    assert wait_until(lambda: post(served.digits, digits_rows(1).tolist()).status_code == 200)
    answered = set()
    for _ in range(20):
        reply = health(served.digits)
        assert reply.status_code == 200
        answered.add(reply.json()["replica"])
    assert before[0].rsplit("#", 1)[1] not in answered


def test_list_shows_both_deployments_with_their_replicas(served: Served) -> None:
    views = {v.name: v for v in list_deployments(served.home)}
    assert sorted(views) == ["cnn", "digits"]
    digits = views["digits"]
    assert digits.state is not None and digits.state.status == "RUNNING"
    assert digits.state.running == 2 and digits.note == ""
    assert digits.record is not None and digits.record.url == served.digits.record.url
    result = CliRunner().invoke(app, ["model", "list", "--home", str(served.home)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["name", "status", "replicas", "url", "run", "tokens"]
    assert lines[2].split()[:4] == ["digits", "RUNNING", "2", "running"]


def test_serve_on_a_cluster_prints_its_url_and_token_and_returns(
    served: Served, ray_session: Any, tmp_path: Path
) -> None:
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    command = [
        sys.executable,
        "-m",
        "redfl.cli",
        "model",
        "serve",
        str(served.digits_run),
        "--name",
        "cli-digits",
        "--address",
        address,
        "--home",
        str(served.home),
        "--replica-cpus",
        "0.25",
        "--port",
        str(free_port()),  # Serve runs already: its own port stays, and is printed
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    url = f"http://127.0.0.1:{served.port}/cli-digits/predict"
    assert f"  POST {url}" in lines
    token = lines[lines.index(next(line for line in lines if line.startswith("token"))) + 1]
    token_file = served.home / "cli-digits" / TOKEN_FILE
    assert token_file.read_text().strip() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert lines[-1] == f"it runs on the Ray cluster at {address}; redfl model stop cli-digits"
    reply = httpx.post(url, json={"inputs": digits_rows(1).tolist()}, headers=bearer(token))
    assert reply.status_code == 200 and len(reply.json()["outputs"][0]) == 10
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2
    assert "a deployment named cli-digits exists" in again.stderr
    stopped = CliRunner().invoke(app, ["model", "stop", "cli-digits", "--home", str(served.home)])
    assert stopped.exit_code == 0 and "stopped cli-digits" in stopped.stdout.splitlines()
    assert "cli-digits" not in deployment_states()
    assert not (served.home / "cli-digits").exists()
    assert wait_until(
        lambda: (
            httpx.post(url, json={"inputs": [[0] * 64]}, headers=bearer(token)).status_code == 404
        )
    )


def test_revoking_every_token_makes_a_new_key_and_prints_a_new_token(served: Served) -> None:
    rows = digits_rows(1).tolist()
    result = CliRunner().invoke(
        app, ["model", "revoke", "cnn", "--all", "--home", str(served.home)]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "revoked every token of cnn" in lines
    announced = next(i for i, line in enumerate(lines) if line.startswith("token "))
    new = lines[announced + 1]
    old = post(served.cnn, rows)
    assert (old.status_code, old.json()) == (401, {"detail": "bad signature"})
    assert post(served.cnn, rows, new).status_code == 200
    record = DeploymentStore(served.home).load("cnn")
    assert [t.revoked for t in record.tokens] == [True, False]
    assert lines[announced].split()[1] == record.tokens[1].id


def test_stop_removes_the_model_and_its_record(served: Served) -> None:
    assert stop_deployment("cnn", served.home) == "stopped cnn"
    assert "cnn" not in deployment_states()
    assert not DeploymentStore(served.home).exists("cnn")
    assert json.loads(health(served.digits).text)["name"] == "digits"
    with pytest.raises(ConfigError, match="no deployment named cnn"):
        stop_deployment("cnn", served.home)
