"""Live progress and execution without Ray: the job entrypoint writes a run's events into
the store, the WebSocket replays and streams them, the metrics feed counts them, and the
executor marks failed the runs whose job is gone."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from platform_app import add_user, app_fixture, bearer, client_fixture, make_app  # noqa: F401
from safetensors.numpy import load_file
from starlette.websockets import WebSocketDisconnect
from test_platform_roles import _headers
from waiting import wait_until

from redfl.platform.executor import Executor, entrypoint
from redfl.platform.job import execute
from redfl.platform.store import Store
from redfl.run.folder import load_parameters

ECHO = """
[federation]
name = "echo"
rounds = ROUNDS
runtime = "local"

[client]
target = "redfl.examples.echo:EchoClient"
num_clients = 3
options = { size = 4 }
"""


def _queue(app: FastAPI, client: TestClient, rounds: int = 3) -> str:
    body = {"config": ECHO.replace("ROUNDS", str(rounds))}
    response = client.post("/api/runs", json=body, headers=bearer(app, "rita"))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _token(app: FastAPI, name: str = "vic") -> str:
    return bearer(app, name)["Authorization"].removeprefix("Bearer ")


def _drain(ws: Any) -> tuple[list[dict[str, Any]], int]:
    """Every message until the server closes; the messages and the close code."""
    got = []
    while True:
        try:
            got.append(ws.receive_json())
        except WebSocketDisconnect as closed:
            return got, closed.code


def test_job_writes_events_metrics_and_status(app: FastAPI, client: TestClient) -> None:
    run_id = _queue(app, client, rounds=3)
    assert execute(run_id, app.state.settings) == "succeeded"
    detail = client.get(f"/api/runs/{run_id}", headers=bearer(app, "vic")).json()
    assert detail["status"] == "succeeded"
    assert [m["round"] for m in detail["metrics"]] == [1, 2, 3]
    assert "model.safetensors" in detail["artifacts"]
    with client.websocket_connect(f"/api/runs/{run_id}/ws?token={_token(app)}") as ws:
        messages, code = _drain(ws)
    assert code == 1000
    kinds = [m["type"] for m in messages]
    assert kinds[:2] == ["status", "run_started"] and messages[0]["status"] == "running"
    assert kinds.count("round_finished") == 3 and kinds[-2:] == ["run_finished", "status"]
    assert messages[-1]["status"] == "succeeded"
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    assert messages[kinds.index("round_finished")]["record"]["round"] == 1


def test_cancel_flag_stops_the_job_at_a_round_boundary(app: FastAPI, client: TestClient) -> None:
    run_id = _queue(app, client, rounds=50)
    with app.state.sessions() as session:
        Store(session).require_run(run_id).cancel_requested = True  # asked as it starts
        session.commit()
    assert execute(run_id, app.state.settings) == "cancelled"
    detail = client.get(f"/api/runs/{run_id}", headers=bearer(app, "vic")).json()
    assert (detail["status"], len(detail["metrics"])) == ("cancelled", 1)
    folder = Path(app.state.settings.runs_dir / run_id)
    assert sorted(load_file(folder / "model.safetensors")) == ["w"]
    assert '"status": "cancelled"' in (folder / "summary.json").read_text()


def test_cancel_of_a_queued_run_ends_its_stream(app: FastAPI, client: TestClient) -> None:
    run_id = _queue(app, client)
    cancelled = client.post(f"/api/runs/{run_id}/cancel", headers=bearer(app, "rita"))
    assert cancelled.json()["status"] == "cancelled"
    assert execute(run_id, app.state.settings) == "cancelled"  # a late job leaves it alone
    with client.websocket_connect(f"/api/runs/{run_id}/ws?token={_token(app)}") as ws:
        messages, code = _drain(ws)
    assert ([m["type"] for m in messages], code) == (["run_cancelled", "status"], 1000)


def _append(app: FastAPI, run: str, kind: str, **data: Any) -> int:
    with app.state.sessions() as session:
        store = Store(session)
        if kind == "status":
            return store.record_status(run, data["status"])
        if kind == "round_finished":
            store.add_round_metric(run, data["record"]["round"], data["record"])
        return store.append_event(run, kind, data)


def _record(rnd: int) -> dict[str, Any]:
    return {"round": rnd, "sampled": 3, "succeeded": 3, "failed": 0, "seconds": 0.2}


def test_late_subscriber_gets_earlier_events_then_live_ones(
    app: FastAPI, client: TestClient
) -> None:
    run_id = _queue(app, client)
    _append(app, run_id, "status", status="running")
    _append(app, run_id, "run_started", run_id=run_id, schema="star", rounds=3)
    _append(app, run_id, "round_finished", record=_record(1))
    with client.websocket_connect(f"/api/runs/{run_id}/ws?token={_token(app)}") as ws:
        early = [ws.receive_json() for _ in range(3)]
        assert [m["type"] for m in early] == ["status", "run_started", "round_finished"]
        for rnd in (2, 3):
            seq = _append(app, run_id, "round_finished", record=_record(rnd))
            live = ws.receive_json()
            assert (live["seq"], live["record"]["round"]) == (seq, rnd)
        _append(app, run_id, "run_finished", rounds=3, summary={})
        _append(app, run_id, "status", status="succeeded")
        rest, code = _drain(ws)
    assert [m["type"] for m in rest] == ["run_finished", "status"]
    assert rest[-1]["status"] == "succeeded" and code == 1000
    assert [m["seq"] for m in early] + [seq - 1, seq] + [m["seq"] for m in rest] == list(range(7))


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        ("anonymous", "not authenticated"),
        ("expired", "token expired"),
        ("foreign", "invalid token"),
        ("revoked", "token revoked"),
    ],
)
def test_websocket_refuses_bad_tokens_with_4401_as_http_does(
    app: FastAPI, client: TestClient, identity: str, reason: str
) -> None:
    run_id = _queue(app, client)
    headers = _headers(app, identity)
    token = headers.get("Authorization", "Bearer ").removeprefix("Bearer ")
    url = f"/api/runs/{run_id}/ws?token={token}"
    with client.websocket_connect(url) as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    assert (closed.value.code, closed.value.reason) == (4401, reason)
    refused = client.get(f"/api/runs/{run_id}/events", headers=headers)
    assert (refused.status_code, refused.json()["detail"]) == (401, reason)


def test_websocket_of_an_unknown_run_closes_with_4404(app: FastAPI, client: TestClient) -> None:
    url = f"/api/runs/{'f' * 32}/ws?token={_token(app)}"
    with client.websocket_connect(url) as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    assert (closed.value.code, closed.value.reason) == (4404, f"run {'f' * 32!r} does not exist")


def test_metrics_feed_counts_rounds_and_failures_of_jobs(app: FastAPI, client: TestClient) -> None:
    run_id = _queue(app, client)
    _append(app, run_id, "round_finished", record=_record(1))
    _append(app, run_id, "failure", failure={"node_id": "3", "round": 1})

    def fed() -> bool:
        text = client.get("/metrics").text
        return "redfl_rounds_completed_total 1.0" in text and (
            "redfl_client_failures_total 1.0" in text
        )

    assert wait_until(fed, 15), client.get("/metrics").text
    assert "redfl_round_seconds_sum 0.2" in client.get("/metrics").text


def test_executor_fails_runs_whose_job_is_gone(app: FastAPI, client: TestClient) -> None:
    run_id, waiting = _queue(app, client), _queue(app, client)
    with app.state.sessions() as session:
        Store(session).set_job_id(run_id, "redfl-" + run_id)
        Store(session).record_status(run_id, "running")
    executor = Executor(app.state.settings, app.state.sessions)  # no Ray head in this folder
    assert executor.reconcile() == 1
    detail = client.get(f"/api/runs/{run_id}", headers=bearer(app, "vic")).json()
    assert detail["status"] == "failed"
    assert detail["error"] == "its Ray job is gone: the embedded Ray head is not running"
    assert client.get(f"/api/runs/{waiting}", headers=bearer(app, "vic")).json()["status"] == (
        "queued"
    )


def test_job_entrypoint_names_the_interpreter_and_runs_in_the_run_folder(tmp_path: Path) -> None:
    command = entrypoint("abc", str(tmp_path / "runs" / "abc"), tmp_path)
    assert command.startswith(f"cd {tmp_path}/runs/abc && exec {sys.executable} -m ")
    assert command.endswith(f"redfl.platform.job abc --data {tmp_path}")


def test_no_tracing_without_an_endpoint(tmp_path: Path) -> None:
    script = f"""
import sys
from fastapi.testclient import TestClient
from redfl.platform.api.app import create_app
from redfl.platform.settings import Settings
app = create_app(Settings(data_dir={str(tmp_path)!r}))
with TestClient(app) as client:
    assert client.get("/api/health").status_code == 200
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_tracing_exports_request_and_round_spans_to_the_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export every 0.1 s
    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
        traced = make_app(tmp_path / "data", otlp_endpoint=endpoint)
        add_user(traced, "rita", "researcher")
        with TestClient(traced) as client:
            run_id = _queue(traced, client, rounds=2)
            assert execute(run_id, traced.state.settings) == "succeeded"

        def exported(name: bytes) -> bool:
            return any(path == "/v1/traces" and name in body for path, body in received)

        assert wait_until(lambda: exported(b"POST /api/runs") and exported(b"round 2"), 15)
    finally:
        collector.shutdown()


SLOW = """
[federation]
name = "slow"
rounds = ROUNDS
runtime = "local"

[client]
target = "redfl.examples.digits:DigitsClient"
num_clients = 4
options = { epochs = 60, tile = 2 }
"""


def _queue_slow(app: FastAPI, client: TestClient, rounds: int = 40) -> str:
    body = {"config": SLOW.replace("ROUNDS", str(rounds))}
    response = client.post("/api/runs", json=body, headers=bearer(app, "rita"))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _rounds(app: FastAPI, run_id: str) -> int:
    with app.state.sessions() as session:
        return len(Store(session).round_metrics(run_id))


def test_a_stop_ends_the_job_mid_round_and_keeps_the_last_completed_round(
    app: FastAPI, client: TestClient
) -> None:
    run_id = _queue_slow(app, client)
    asked: list[float] = []

    def stop_after_a_round() -> None:
        assert wait_until(lambda: _rounds(app, run_id) >= 1, 60)
        response = client.post(f"/api/runs/{run_id}/stop", headers=bearer(app, "rita"))
        assert response.json()["stop_requested"] is True
        asked.append(time.monotonic())

    helper = threading.Thread(target=stop_after_a_round)
    helper.start()
    assert execute(run_id, app.state.settings) == "stopped"
    ended = time.monotonic()
    helper.join()
    assert ended - asked[0] < 3.0  # within the watcher's half second and the round's end
    detail = client.get(f"/api/runs/{run_id}", headers=bearer(app, "vic")).json()
    done = len(detail["metrics"])
    assert (detail["status"], detail["error"]) == ("stopped", "stopped by rita")
    assert 1 <= done < 40 and detail["rounds_done"] == done
    folder = Path(app.state.settings.runs_dir / run_id)
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["status"], summary["rounds"], summary["error"]) == (
        "stopped",
        done,
        "stopped by rita",
    )
    _, metadata = load_parameters(folder / "model.safetensors")
    assert metadata["rounds"] == done  # the model of the last completed round
    kinds = [
        e["type"]
        for e in client.get(f"/api/runs/{run_id}/events", headers=bearer(app, "vic")).json()
    ]
    assert kinds[-2:] == ["run_stopped", "status"] and kinds.count("round_finished") == done


def test_the_wall_clock_limit_stops_a_run(tmp_path: Path) -> None:
    app = make_app(tmp_path / "d", max_run_seconds=2)
    add_user(app, "rita", "researcher")
    with TestClient(app) as client:
        run_id = _queue_slow(app, client, rounds=200)
        started = time.monotonic()
        assert execute(run_id, app.state.settings) == "stopped"
        assert 2.0 <= time.monotonic() - started < 8.0
        detail = client.get(f"/api/runs/{run_id}", headers=bearer(app, "rita")).json()
    assert detail["error"] == "stopped: the wall-clock limit of 2 s was reached"
    assert 1 <= len(detail["metrics"]) < 200


class FakeJobs:
    """Stands in for the Ray job server: records submissions and stops."""

    url = "fake"

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.stopped: list[str] = []
        self.lock = threading.Lock()

    def submit(self, job_id: str, entrypoint: str, env: dict[str, str] | None = None) -> str:
        with self.lock:
            self.submitted.append(job_id)
        return job_id

    def status(self, job_id: str) -> str:
        return "RUNNING"

    def stop(self, job_id: str) -> bool:
        self.stopped.append(job_id)
        return True


def _executor(app: FastAPI, jobs: FakeJobs, **settings: Any) -> Executor:
    executor = Executor(app.state.settings.model_copy(update=settings), app.state.sessions)
    executor.client = lambda start: jobs  # type: ignore[assignment,method-assign,return-value]
    return executor


def test_of_two_servers_one_executes_and_no_run_is_submitted_twice(
    app: FastAPI, client: TestClient
) -> None:
    runs = [_queue(app, client) for _ in range(6)]
    jobs = FakeJobs()
    first = _executor(app, jobs, max_concurrent_runs=100)
    second = _executor(app, jobs, max_concurrent_runs=100)
    assert first.step(reconcile=False) and not second.step(reconcile=False)
    assert sorted(jobs.submitted) == sorted(f"redfl-{r}" for r in runs)
    more = [_queue(app, client) for _ in range(20)]
    racers = [threading.Thread(target=e.dispatch) for e in (first, second)]  # lease aside
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted(jobs.submitted) == sorted(f"redfl-{r}" for r in runs + more)  # each once
    first.release()
    assert second.lead()  # the lease passes on when its holder lets go


def test_a_stopped_run_whose_job_does_not_end_is_stopped_through_ray(
    app: FastAPI, client: TestClient
) -> None:
    late, stuck = _queue(app, client), _queue(app, client)
    with app.state.sessions() as session:
        store = Store(session)
        for run_id in (late, stuck):
            store.set_job_id(run_id, f"redfl-{run_id}")
            store.record_status(run_id, "running")
        store.require_run(late).started_at = datetime.now(UTC) - timedelta(seconds=100)
        session.commit()
        store.request_stop(stuck, "stopped by rita")
    jobs = FakeJobs()
    executor = _executor(app, jobs, max_run_seconds=60, stop_grace_seconds=1)
    assert executor.enforce_stops() == 0  # asked; their jobs get the grace period
    with app.state.sessions() as session:
        assert Store(session).stop_request(late) == (
            "stopped: the wall-clock limit of 60 s was reached"
        )

    def both_stopped() -> bool:  # each once its own grace has passed
        executor.enforce_stops()
        return len(jobs.stopped) == 2

    assert wait_until(both_stopped, 10)
    assert sorted(jobs.stopped) == sorted([f"redfl-{late}", f"redfl-{stuck}"])
    for run_id, reason in (
        (late, "stopped: the wall-clock limit of 60 s was reached"),
        (stuck, "stopped by rita"),
    ):
        detail = client.get(f"/api/runs/{run_id}", headers=bearer(app, "vic")).json()
        assert (detail["status"], detail["error"]) == ("stopped", reason)
