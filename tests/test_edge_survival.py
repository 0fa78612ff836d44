"""An edge deployment that outlives its parts, with real processes: the supervisor's backoff
and limit; ``redfl edge up`` with an LCP SIGKILLed (started again, the job finishes); the edge
server SIGKILLed mid-job (it takes the job back: no acknowledged update lost, none counted
twice); an aggregating relay SIGKILLed mid-job (the same); the simulator against a proxy
that is not there (it gives up at its timeout)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edge_rig import NUMERIC, provision, wait_until
from typer.testing import CliRunner
from waiting import free_port

from redfl.edge.cli import edge_app
from redfl.edge.control import ControlError, Operator
from redfl.edge.fleet import Fleet
from redfl.edge.launch import EdgeProcesses
from redfl.edge.simulator import SimulatorConfig, Summary, run_simulation
from redfl.edge.supervisor import Supervisor
from redfl.run.folder import load_parameters

LCPS = ["lcp-1-1", "lcp-1-2", "lcp-2-1", "lcp-2-2"]
JOB = {
    "name": "survivor",
    "client": NUMERIC,
    "options": {"num_parameters": 100},
    "num_updates_for_model": 20,
    "max_model_version": 12,
    "max_model_history": 12,
    "device_selection_size": 40,
    "staleness_weight": False,  # each version adds exactly 1: the model counts the versions
}


class Simulation:
    """The simulator run in a thread, as a fleet beside the test: its summary once it ends."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.out: list[Summary] = []
        self.thread = threading.Thread(target=lambda: self.out.append(run_simulation(config)))
        self.thread.start()

    def summary(self, timeout: float) -> Summary:
        """The simulation's summary, once it has ended (within ``timeout`` seconds)."""
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive() and self.out, "the simulation did not finish"
        return self.out[0]


def deployment_folder(tmp_path: Path, **job: Any) -> Path:
    folder = provision(tmp_path / "tree")
    lcp_map = {name: {"host": "127.0.0.1", "port": free_port()} for name in LCPS}
    (folder / "lcp_map.json").write_text(json.dumps(lcp_map))
    (tmp_path / "job.json").write_text(json.dumps({**JOB, **job}))
    return folder


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_supervisor_restarts_with_backoff_and_leaves_a_crashing_process_down() -> None:
    logged: list[str] = []
    supervisor = Supervisor(max_restarts=2, window=60.0, backoff=0.05, log=logged.append)
    supervisor.start("crash", [sys.executable, "-c", "import sys; sys.exit(3)"])
    steady = supervisor.start("steady", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:

        def settled() -> bool:
            supervisor.poll()
            return any(r.action == "left down" for r in supervisor.restarts)

        wait_until(settled, timeout=30, what="the crashing process left down")
        assert [(r.name, r.code, r.action) for r in supervisor.restarts] == [
            ("crash", 3, "restart in 0.05 s"),
            ("crash", 3, "restart in 0.1 s"),
            ("crash", 3, "left down"),
        ]
        assert supervisor.pid("steady") == steady and supervisor.pid("crash") is None
        assert sum("started crash again" in line for line in logged) == 2
        assert logged[-1].endswith("3 times in 60 s: left down (the rest keeps running)")
    finally:
        supervisor.stop()
    assert supervisor.pids() == []
    with pytest.raises(ValueError, match="max_restarts >= 0"):
        Supervisor(max_restarts=-1)


def test_the_simulator_gives_up_at_its_timeout_on_a_dead_proxy() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    summary = run_simulation(SimulatorConfig(dead, "j", NUMERIC, 4, 4, "s", timeout=2.0))
    assert time.monotonic() - start < 15
    assert not summary.done and summary.transport_errors > 0
    assert summary.error.startswith("the proxy cannot be reached (")
    assert summary.error.endswith("gave up at the timeout")
    result = CliRunner().invoke(
        edge_app,
        [
            "simulate",
            "--proxy",
            dead,
            "--job",
            "j",
            "--client",
            NUMERIC,
            "--enroll-secret",
            "s",
            "--devices",
            "2",
            "--timeout",
            "1",
        ],
    )
    assert result.exit_code == 1 and "redfl: error: the proxy cannot be reached" in result.output


def test_edge_up_restarts_a_killed_lcp_and_the_job_finishes(tmp_path: Path) -> None:
    folder = deployment_folder(tmp_path, max_model_version=30)
    proxy_port, server_port = free_port(), free_port()
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redfl.edge.cli",
            "up",
            "--tree",
            str(folder),
            "--job",
            str(tmp_path / "job.json"),
            "--port",
            str(proxy_port),
            "--server-port",
            str(server_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(up.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()
    pids: dict[str, int] = {}
    try:

        def started() -> bool:
            assert up.poll() is None, "".join(err)
            for line in list(err):
                if line.startswith("redfl edge up: ") and " pid " in line:
                    name, pid = line.removeprefix("redfl edge up: ").split(" pid ")
                    pids[name] = int(pid)
            return len(pids) == len(LCPS) + 2

        wait_until(started, timeout=120, what="edge up started")
        operator = Operator.of_tree(folder)
        server = f"https://127.0.0.1:{server_port}"
        [job] = operator.jobs(server)
        tokens = Fleet.of_tree(folder).issue(f"phone-{i:03d}" for i in range(120))
        config = SimulatorConfig(
            f"http://127.0.0.1:{proxy_port}",
            "survivor",
            NUMERIC,
            120,
            16,
            tokens=tokens,
            timeout=240,
            delay=0.05,
        )
        sim = Simulation(config)
        wait_until(lambda: operator.jobs(server)[0]["version"] >= 3, timeout=120, what="v3")
        os.kill(pids["lcp-1-1"], signal.SIGKILL)  # a process this test started (edge up's)
        again = "supervisor: started lcp-1-1 again (pid "
        wait_until(lambda: any(line.startswith(again) for line in err), 30, "the restart")
        assert operator.jobs(server)[0]["status"] == "running"  # restarted mid-job
        summary = sim.summary(300)
        assert summary.done, summary.error
        final = operator.get(f"{server}/jobs/{job['job_id']}", ids=True)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
        reader.join(timeout=10)
    assert up.returncode == 0, "".join(err)
    assert final["status"] == "succeeded" and final["version"] == 30
    assert final["accepted"] == final["accepted_unique"] == len(final["task_ids"])
    restarted = [line for line in err if line.startswith("supervisor: lcp-1-1 (pid ")]
    assert restarted and "exited with -9; restart 1 of 5 in 60 s" in restarted[0], err
    assert any(line.startswith("supervisor: started lcp-1-1 again (pid ") for line in err), "".join(
        err
    )
    for pid in pids.values():  # edge up stopped every process it started
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_sigkilled_server_takes_its_job_back_with_nothing_lost_or_counted_twice(
    tmp_path: Path,
) -> None:
    folder = deployment_folder(tmp_path)
    tokens = Fleet.of_tree(folder).issue(f"phone-{i:03d}" for i in range(200))
    edge = EdgeProcesses(folder, tmp_path / "job.json", free_port(), free_port())
    edge.start(timeout=120)
    try:
        [job] = edge.get(f"{edge.server_url}/jobs")["jobs"]
        config = SimulatorConfig(
            edge.proxy_url, "survivor", NUMERIC, 200, 16, tokens=tokens, timeout=240
        )
        sim = Simulation(config)
        edge.wait_job(job["job_id"], 120, until=lambda s: s["version"] >= 4)
        killed = time.monotonic()
        edge.kill("server")  # SIGKILL, by pid; the supervisor starts it again

        def serving() -> bool:
            try:
                return bool(edge.get(f"{edge.server_url}/health")["status"] == "OK")
            except ControlError:
                return False

        wait_until(serving, timeout=60, what="the server serving again")
        back = time.monotonic() - killed
        summary = sim.summary(300)
        final = edge.job(job["job_id"], ids=True)
        status = edge.get(f"{edge.server_url}/status")
    finally:
        edge.stop()
    print(f"the SIGKILLed server served again after {back:.2f} s")
    assert summary.done and final["status"] == "succeeded" and final["version"] == 12
    assert status["resumed"] == [job["job_id"]]
    # nothing counted twice: every folded id once, and the model moved by exactly 1 a version
    assert final["accepted"] == final["accepted_unique"] == len(final["task_ids"])
    parameters, _ = load_parameters(Path(final["folder"]) / "model.safetensors")
    np.testing.assert_array_equal(parameters["value"], np.full(100, 12.0, np.float32))
    # nothing acknowledged lost: every update a device saw accepted is in the folded ids
    assert summary.acked and summary.acked <= set(final["task_ids"])
    job_folder = Path(final["folder"])
    assert [m["round"] for m in lines(job_folder / "metrics.jsonl")] == list(range(1, 13))
    events = lines(job_folder / "events.jsonl")
    [resumed] = [e for e in events if e["type"] == "job_resumed"]
    assert resumed["version"] >= 4
    assert [e["type"] for e in events].count("run_finished") == 1


def test_a_killed_aggregating_relay_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    folder = deployment_folder(tmp_path)
    tokens = Fleet.of_tree(folder).issue(f"phone-{i:03d}" for i in range(200))
    relays = {"relay-1": free_port(), "relay-2": free_port()}
    edge = EdgeProcesses(
        folder, tmp_path / "job.json", free_port(), free_port(), relays=True, relay_ports=relays
    )
    edge.start(timeout=120)
    try:
        [job] = edge.get(f"{edge.server_url}/jobs")["jobs"]
        config = SimulatorConfig(
            edge.proxy_url, "survivor", NUMERIC, 200, 16, tokens=tokens, timeout=240
        )
        sim = Simulation(config)
        edge.wait_job(job["job_id"], 120, until=lambda s: s["version"] >= 4)
        edge.kill("relay-1")  # SIGKILL, by pid; its LCPs' syncs wait until it is back
        summary = sim.summary(300)
        final = edge.job(job["job_id"], ids=True)
        relay = edge.get(f"{edge.url_of('relay-2')}/stats")
        restarts = list(edge.supervisor.restarts)
    finally:
        edge.stop()
    assert summary.done and final["status"] == "succeeded" and final["version"] == 12
    assert [(r.name, r.code) for r in restarts] == [("relay-1", -9)]
    assert final["accepted"] == final["accepted_unique"] == len(final["task_ids"])
    assert summary.acked and summary.acked <= set(final["task_ids"])
    parameters, _ = load_parameters(Path(final["folder"]) / "model.safetensors")
    np.testing.assert_array_equal(parameters["value"], np.full(100, 12.0, np.float32))
    # the other relay carried its LCPs' partial sums up as their aggregator (how many it
    # summed depends on their syncs meeting there: test_edge_services shows the summing)
    assert relay["aggregates"] and 0 < relay["partials_out"] <= relay["partials_in"]
