"""End to end: proxy + 4 LCPs (2 leaf relays x 2 LCPs) + server as processes, every internal
hop mutual TLS with the credentials ``redfl tree`` provisioned, the proxy's port TLS too;
1,000 simulated digits devices with tokens issued in advance; one LCP is killed mid-job."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from edge_rig import provision, wait_until
from waiting import free_port

from redfl.edge.fleet import Fleet
from redfl.edge.launch import EdgeProcesses
from redfl.edge.simulator import SimulatorConfig, Summary, run_simulation

LCPS = ["lcp-1-1", "lcp-1-2", "lcp-2-1", "lcp-2-2"]
JOB = {
    "name": "digits-e2e",
    "task": "digits",
    "num_updates_for_model": 50,
    "max_model_version": 20,
    "max_model_history": 4,
    "device_selection_size": 60,
    "local_epochs": 5,
}


def test_digits_job_survives_the_loss_of_an_lcp(tmp_path: Path) -> None:
    folder = provision(tmp_path / "tree")
    lcp_map = {name: {"host": "127.0.0.1", "port": free_port()} for name in LCPS}
    (folder / "lcp_map.json").write_text(json.dumps(lcp_map))
    (tmp_path / "job.json").write_text(json.dumps(JOB))
    tokens = Fleet.of_tree(folder).issue(f"phone-{i:04d}" for i in range(1_000))
    edge = EdgeProcesses(folder, tmp_path / "job.json", free_port(), free_port(), proxy_tls=True)
    edge.start(timeout=120)
    try:
        ca = str(folder / "trust" / "ca.pem")
        config = SimulatorConfig(
            edge.proxy_url, "digits-e2e", 1_000, 16, "digits", tokens=tokens, ca=ca
        )
        out: list[Summary] = []
        sim = threading.Thread(target=lambda: out.append(run_simulation(config)))
        sim.start()

        def version() -> int:
            return int(edge.get(f"{edge.server_url}/status")["version"])

        wait_until(lambda: version() >= 6, timeout=300, what="version 6")
        stats = edge.get(f"{edge.proxy_url}/stats")
        forwards: dict[str, int] = stats["forwards"]
        victim = max(forwards, key=lambda lcp: forwards[lcp])  # the busiest LCP
        edge.kill(victim)
        sim.join(timeout=400)
        assert not sim.is_alive() and out, "the simulation did not finish"
        summary = out[0]
        final = edge.get(f"{edge.server_url}/status", ids=True)
        stats = edge.get(f"{edge.proxy_url}/stats")
    finally:
        edge.stop()
    assert summary.done and final["done"] and final["version"] == 20
    best = max(h["accuracy"] for h in final["history"])
    assert best >= 0.85, [round(h["accuracy"], 3) for h in final["history"]]
    assert summary.accuracy is not None and summary.accuracy >= 0.8
    # nothing counted twice, nothing acknowledged lost
    assert final["accepted"] == final["accepted_unique"] == len(final["task_ids"])
    assert summary.acked <= set(final["task_ids"])
    assert len(summary.acked) >= final["accepted"] - 60  # at most the killed LCP's in-flight
    # the victim's devices were re-routed to their next choice
    assert stats["up"][victim] is False and stats["failovers"] > 0
