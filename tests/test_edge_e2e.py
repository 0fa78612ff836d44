"""End to end: proxy + 4 LCPs (2 leaf relays x 2 LCPs) + server as processes, every internal
hop mutual TLS with the credentials ``redfl tree`` provisioned, the proxy's port TLS too;
1,000 simulated devices running the digits device class with tokens issued in advance; one
LCP is SIGKILLed mid-job: the proxy fails its devices over, ``redfl edge up``'s supervisor
starts it again, and the job finishes."""

from __future__ import annotations

import json
import ssl
import threading
from pathlib import Path

import httpx
from edge_rig import provision, wait_until
from waiting import free_port

from redfl.edge.fleet import Fleet
from redfl.edge.hashing import choose
from redfl.edge.launch import EdgeProcesses
from redfl.edge.simulator import SimulatorConfig, Summary, run_simulation
from redfl.edge.supervisor import Supervisor

LCPS = ["lcp-1-1", "lcp-1-2", "lcp-2-1", "lcp-2-2"]
JOB = {
    "name": "digits-e2e",
    "client": "redfl.examples.edge:DigitsDevice",
    "evaluate": "redfl.examples.edge:digits_evaluation",
    "options": {"epochs": 5},
    "num_updates_for_model": 50,
    "max_model_version": 20,
    "max_model_history": 4,
    "device_selection_size": 60,
}


def test_digits_job_survives_the_loss_of_an_lcp(tmp_path: Path) -> None:
    folder = provision(tmp_path / "tree")
    lcp_map = {name: {"host": "127.0.0.1", "port": free_port()} for name in LCPS}
    (folder / "lcp_map.json").write_text(json.dumps(lcp_map))
    (tmp_path / "job.json").write_text(json.dumps(JOB))
    tokens = Fleet.of_tree(folder).issue(f"phone-{i:04d}" for i in range(1_000))
    # the victim stays down 3 s before its restart: its devices must fail over meanwhile
    supervisor = Supervisor(backoff=3.0)
    edge = EdgeProcesses(
        folder,
        tmp_path / "job.json",
        free_port(),
        free_port(),
        proxy_tls=True,
        supervisor=supervisor,
    )
    edge.start(timeout=120)
    try:
        ca = str(folder / "trust" / "ca.pem")
        config = SimulatorConfig(
            edge.proxy_url, "digits-e2e", str(JOB["client"]), 1_000, 16, tokens=tokens, ca=ca
        )
        out: list[Summary] = []
        sim = threading.Thread(target=lambda: out.append(run_simulation(config)))
        sim.start()

        [job] = edge.get(f"{edge.server_url}/jobs")["jobs"]

        def version() -> int:
            return int(edge.job(job["job_id"])["version"])

        wait_until(lambda: version() >= 6, timeout=300, what="version 6")
        stats = edge.get(f"{edge.proxy_url}/stats")
        forwards: dict[str, int] = stats["forwards"]
        victim = max(forwards, key=lambda lcp: forwards[lcp])  # the busiest LCP
        edge.kill(victim)
        # a device of the victim asking while it is down is served by its next LCP (whether
        # one of the simulated devices asks in those seconds depends on the load)
        device = next(d for d in tokens if choose(d, LCPS)[0] == victim)
        asked = httpx.post(
            f"{edge.proxy_url}/task",
            json={"job_id": "digits-e2e"},
            headers={"Authorization": f"Bearer {tokens[device]}"},
            verify=ssl.create_default_context(cafile=ca),
            timeout=30,
        )
        assert asked.status_code == 200, asked.text
        sim.join(timeout=400)
        assert not sim.is_alive() and out, "the simulation did not finish"
        summary = out[0]
        final = edge.job(job["job_id"], ids=True)
        stats = edge.get(f"{edge.proxy_url}/stats")
        restarts = list(edge.supervisor.restarts)
    finally:
        edge.stop()
    assert summary.done and final["status"] == "succeeded" and final["version"] == 20
    best = max(h["accuracy"] for h in final["history"][1:])
    assert best >= 0.85, [round(h["accuracy"], 3) for h in final["history"]]
    assert final["accuracy"] is not None and final["accuracy"] >= 0.8
    # nothing counted twice, nothing acknowledged lost
    assert final["accepted"] == final["accepted_unique"] == len(final["task_ids"])
    assert summary.acked <= set(final["task_ids"])
    assert len(summary.acked) >= final["accepted"] - 60  # at most the killed LCP's in-flight
    # the victim's devices were re-routed to their next choice, and the victim restarted
    assert stats["failovers"] > 0
    assert [(r.name, r.code, r.action.split(" in ")[0]) for r in restarts] == [
        (victim, -9, "restart")
    ]
    folder = Path(final["folder"])
    versions = [json.loads(line)["round"] for line in (folder / "metrics.jsonl").open()]
    assert versions == list(range(1, 21))  # one metrics line per version, each once
