"""Multi-node Ray clusters, tested on a real cluster of four Ray nodes on this machine.

One cluster per module (``tests/cluster_driver.py serve``: a head with no CPU and three
1-CPU nodes carrying ``site_a``, ``site_b``, ``site_c``); every federation joins it from a
subprocess, since this process belongs to the session's own Ray instance. At the end the
cluster is shut down, and any of its processes still alive are killed by pid.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
DRIVER = TESTS / "cluster_driver.py"
START_S = 120.0
SCENARIO_S = 150.0
SCENARIOS = ("spread", "strict_spread", "pin", "tree_pin")


class ClusterHandle:
    """The ``serve`` subprocess: its first line (address, nodes, pids) and its commands."""

    def __init__(self, process: subprocess.Popen[str], info: dict[str, Any]) -> None:
        self.process = process
        self.address: str = info["address"]
        self.nodes: dict[str, str] = info["nodes"]
        self.pids: list[int] = list(info["pids"])

    def command(self, line: str, seconds: float = 60.0) -> dict[str, Any]:
        """Send one command; its one-line JSON answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(_read_line(self.process, seconds))
        self.pids.extend(answer.get("pids", []))
        if "added" in answer:  # a re-added site is a new Ray node
            self.nodes[answer["added"]] = answer["node"]
        return answer


def _env(ray_tmp: str | None = None) -> dict[str, str]:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    if ray_tmp is not None:
        env["RAY_TMPDIR"] = ray_tmp  # the cluster's session files and address file stay here
    return env


def _read_line(process: subprocess.Popen[str], seconds: float) -> str:
    """The next stdout line of ``process``, within ``seconds``."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], seconds)
    if not ready:
        raise TimeoutError(f"no answer from the cluster driver within {seconds:g} s")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the cluster driver exited (code {process.poll()})")
    return line


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterHandle]:
    """One four-node cluster for the module; shut down (and its pids killed) after."""
    ray_tmp = tempfile.mkdtemp(prefix="rcl", dir="/tmp")  # short: Unix socket paths
    process = subprocess.Popen(
        [sys.executable, str(DRIVER), "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(ray_tmp),
        cwd=TESTS.parent,
    )
    handle: ClusterHandle | None = None
    try:
        handle = ClusterHandle(process, json.loads(_read_line(process, START_S)))
        yield handle
    finally:
        if process.poll() is None and process.stdin is not None:
            process.stdin.write("stop\n")
            process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        _kill(handle.pids if handle is not None else [])
        shutil.rmtree(ray_tmp, ignore_errors=True)


def run_scenarios(
    cluster: ClusterHandle,
    names: Sequence[str],
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run scenarios in one subprocess joined to the cluster; ``on_progress`` gets each
    ``{"progress": ...}`` line as it comes (to act mid-run, e.g. remove a node)."""
    with tempfile.TemporaryFile("w+") as errors:  # a file: a full pipe would block Ray
        process = subprocess.Popen(
            [sys.executable, str(DRIVER), "scenario", cluster.address, *names],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=_env(),
            cwd=TESTS.parent,
        )
        deadline = time.monotonic() + SCENARIO_S
        try:
            while True:
                text = _read_line(process, max(0.0, deadline - time.monotonic()))
                if not text.startswith("{"):
                    continue  # not the driver's own line (a worker's print, say)
                line = json.loads(text)
                if "results" in line:
                    results: dict[str, Any] = line["results"]
                    break
                if on_progress is not None:
                    on_progress(line["progress"])
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except (TimeoutError, RuntimeError) as error:
            process.kill()
            process.wait(timeout=10)
            errors.seek(0)
            raise AssertionError(f"{error}: {errors.read()[-3000:]}") from None
    assert process.returncode == 0
    return results


@pytest.fixture(scope="module")
def scenarios(cluster: ClusterHandle) -> dict[str, Any]:
    """The placement scenarios, run once in one subprocess joined to the cluster."""
    return run_scenarios(cluster, SCENARIOS)


def test_in_process_workers_report_a_local_machine() -> None:
    from redfl.run.prepare import prepare

    config = {
        "federation": {"rounds": 1, "runtime": "local"},
        "client": {"target": "redfl.examples.echo:EchoClient", "num_clients": 3},
        "resources": {"num_workers": 3},
    }
    federation = prepare(config).federation
    assert federation.worker_nodes() == []  # nothing runs before the first round
    federation.train(1)
    assert federation.worker_nodes() == ["local"] * 3
    federation.stop()


def test_cluster_has_a_cpu_less_head_and_three_site_nodes(cluster: ClusterHandle) -> None:
    assert sorted(cluster.nodes) == ["site_a", "site_b", "site_c"]
    assert len(set(cluster.nodes.values())) == 3
    host, _, port = cluster.address.rpartition(":")
    assert host and port.isdigit()


def test_spread_puts_three_workers_on_three_nodes(
    cluster: ClusterHandle, scenarios: dict[str, Any]
) -> None:
    # Half-CPU workers: PACK fits two on one node, SPREAD gives each its own.
    spread = scenarios["spread"]["SPREAD"]
    assert len(spread) == 3
    assert set(spread) == set(cluster.nodes.values())
    packed = scenarios["spread"]["PACK"]
    assert len(packed) == 3
    assert len(set(packed)) < 3


def test_strict_spread_beyond_the_nodes_is_refused_before_anything_starts(
    scenarios: dict[str, Any],
) -> None:
    result = scenarios["strict_spread"]
    assert result["error"] is not None
    assert "STRICT_SPREAD needs one machine per bundle" in result["error"]
    assert "asked 4 bundles" in result["error"]
    assert "only 3 of the cluster's 4 machine(s) can hold one" in result["error"]
    assert result["groups_created"] == 0
    assert result["actors_named"] == 0


def test_a_custom_resource_pins_every_worker_to_its_site(
    cluster: ClusterHandle, scenarios: dict[str, Any]
) -> None:
    # As many workers as site_a's one unit allows, all on its node (not one per CPU).
    assert scenarios["pin"]["halves"] == [cluster.nodes["site_a"]] * 2  # {CPU=.5, site_a=.5}
    assert scenarios["pin"]["whole"] == [cluster.nodes["site_a"]]  # {CPU = 1, site_a = 1}


def test_a_pinned_subtree_runs_on_the_machine_with_its_site_resource(
    cluster: ClusterHandle, scenarios: dict[str, Any]
) -> None:
    # relay_tree(2, 2, 2) on two shared workers and agg-2's own: site_b offers
    # redfl-site-agg-2, so agg-2's subtree (8 of the 16 clients) is folded there, and one
    # partial sum per subtree reaches the driver; the bits are the local runtime's.
    result = scenarios["tree_pin"]
    assert result["layout"] == {"agg-1": 0, "agg-2": 2}
    assert result["nodes"][2] == cluster.nodes["site_b"]
    assert result["succeeded"] == 16
    assert result["root_bytes"] == 2 * 8 * 8  # 2 subtrees, each one float64 sum of 8 values
    assert result["identical"]


CLI_CONFIG = """
[federation]
name = "cluster-cli"
rounds = 2
seed = 0

[client]
target = "redfl.examples.digits:DigitsClient"
num_clients = 6

[client.options]
epochs = 1

[strategy]
name = "fedavg"
fraction_evaluate = 1.0
"""


def test_cli_run_with_address_completes_on_the_cluster(
    cluster: ClusterHandle, tmp_path: Path
) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(CLI_CONFIG, encoding="utf-8")
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "redfl.cli",
            "run",
            str(config),
            "--address",
            cluster.address,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=SCENARIO_S,
        env=_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}" in done.stdout
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "succeeded"
    assert summary["rounds"] == 2
    assert summary["accuracy"] is not None and summary["accuracy"] > 0.1
    assert len((out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    assert (out / "model.safetensors").stat().st_size > 0


def test_a_lost_node_is_declared_dead_within_seconds(cluster: ClusterHandle) -> None:
    # Last in the module: the harness a node-loss-mid-run scenario builds on.
    started = time.monotonic()
    answer = cluster.command("remove site_c")
    assert answer["removed"] == "site_c"
    assert answer["dead_after_s"] < 10.0
    back = cluster.command("add site_c")
    assert back["added"] == "site_c"
    assert time.monotonic() - started < 60.0


def test_a_node_removed_mid_run_leaves_the_result_bit_identical(cluster: ClusterHandle) -> None:
    # Worker 1's machine is removed (no grace) after round 2; its worker is re-created on
    # the free machine and the run ends with the bits of an undisturbed run.
    from cluster_driver import GO_FILE

    GO_FILE.unlink(missing_ok=True)
    removed: list[str] = []

    def remove_its_node(body: dict[str, Any]) -> None:
        site = next(s for s, node in cluster.nodes.items() if node == body["node"])
        answer = cluster.command(f"remove {site}")
        assert answer["removed"] == site
        removed.append(site)
        GO_FILE.write_text("go", encoding="utf-8")

    try:
        results = run_scenarios(cluster, ["node_loss"], on_progress=remove_its_node)
    finally:
        GO_FILE.unlink(missing_ok=True)
        for site in removed:
            cluster.command(f"add {site}")
    outcome = results["node_loss"]
    assert removed and outcome["rounds"] == 6 and outcome["failures"] == 0
    assert outcome["restarts"] >= 1
    assert outcome["identical"]
