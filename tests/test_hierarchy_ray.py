"""HierarchicalFederation on real Ray: equal to the flat star, a subtree that kills every
worker it runs on is a recorded failure while coverage holds, pins need their site resource,
and the folder `redfl tree` writes runs with `redfl run`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hier_nodes import Noisy, WorkerKiller
from typer.testing import CliRunner

from redfl import FedAvg, HierarchicalFederation, ResourceError, ResourcesConfig, StarFederation
from redfl.cli import app
from redfl.core.arrays import Parameters
from redfl.core.result import FederationError
from redfl.topology import relay_tree

INITIAL: Parameters = {"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32)}
TWO = ResourcesConfig(num_workers=2, worker={"CPU": 0.5})


def test_fedavg_over_a_tree_equals_the_flat_star_on_ray(ray_session) -> None:
    common = dict(initial_parameters=INITIAL, seed=5, resources=TWO)
    hier = HierarchicalFederation(
        Noisy,
        36,
        tree=relay_tree(2, 3, 2),
        clients_per_lcp=2,
        strategy=FedAvg(fraction_fit=0.7),
        **common,  # type: ignore[arg-type]
    )
    star = StarFederation(Noisy, 36, strategy=FedAvg(fraction_fit=0.7), **common)  # type: ignore[arg-type]
    with hier, star:
        got, want = hier.train(3), star.train(3)
        assert hier.layout.units == ("agg-1", "agg-2", "agg-3")
        assert sum(s["tree_units"] for s in hier.worker_stats()) == 3 * 3  # 3 units a round
    assert got.parameters is not None and want.parameters is not None
    gap = max(float(np.max(np.abs(got.parameters[k] - want.parameters[k]))) for k in INITIAL)
    assert gap <= 1e-6
    assert got.history[-1].metrics["root_bytes"] == 3 * (12 + 3) * 8  # 3 float64 sums
    oracle = HierarchicalFederation(
        Noisy,
        36,
        tree=relay_tree(2, 3, 2),
        clients_per_lcp=2,
        runtime="local",
        strategy=FedAvg(fraction_fit=0.7),
        **common,  # type: ignore[arg-type]
    )
    assert oracle.train(3).parameters_equal(got)  # local is the bit-exact oracle


def killer_federation(min_coverage: float) -> HierarchicalFederation:
    """agg-1's subtree (client-0 .. client-7) on worker 0; client-0 kills it in round 2."""
    return HierarchicalFederation(
        WorkerKiller,
        16,
        initial_parameters=INITIAL,
        tree=relay_tree(2, 2, 2),
        clients_per_lcp=2,
        options={"killer": "client-0", "kill_round": 2},
        strategy=FedAvg(fraction_evaluate=0.0),
        min_coverage=min_coverage,
        resources=TWO,
    )


def test_a_subtree_whose_worker_dies_twice_is_a_recorded_failure(ray_session) -> None:
    # client-0 kills every process that fits it in round 2: its subtree is re-run once, on
    # the other worker, which dies too; then the subtree is given up and the round goes on
    with killer_federation(min_coverage=0.5) as fed:
        result = fed.train(3)
        assert fed.layout.worker == {"agg-1": 0, "agg-2": 1}
        restarts = [h.restarts for h in fed.health()]
    assert restarts == [1, 1]  # one loss each: the home call, then the re-run
    assert [r.round for r in result.history] == [1, 2, 3]  # the round went on
    assert [r.succeeded for r in result.history] == [16, 8, 16]
    assert [r.metrics["clients/agg-1"] for r in result.history] == [8, 0, 8]
    assert [r.metrics["clients/agg-2-1"] for r in result.history] == [4, 4, 4]
    lost = [f for f in result.failures if f.round == 2]
    assert [f.node_id for f in lost] == ["agg-1"]
    assert lost[0].reason.startswith(
        "subtree agg-1 failed: lost with its worker 2 times: round 2: its process died"
    ), lost[0].reason
    assert "\n" not in lost[0].reason  # one line: the cause's first line
    assert "sites: agg-1, agg-1-1, agg-1-2, lcp-1-1-1, lcp-1-1-2, lcp-1-2-1, lcp-1-2-2" in (
        lost[0].reason
    )
    assert lost[0].reason.endswith("8 sampled clients lost")
    # both workers are re-created (max_worker_restarts): the subtree is back in round 3
    assert [f.node_id for f in result.failures if f.round == 3] == []
    assert result.history[1].metrics["coverage"] == 0.5


def test_coverage_below_the_minimum_fails_the_run_naming_the_subtree(ray_session) -> None:
    with killer_federation(min_coverage=0.6) as fed, pytest.raises(FederationError) as caught:
        fed.train(3)
    message = str(caught.value)
    assert message.startswith("round 2: coverage 0.500 (8 of 16 sampled clients' updates")
    assert "below min_coverage 0.6; failed: agg-1: subtree agg-1 failed: lost with its" in (message)


def test_a_pin_needs_its_site_resource(ray_session) -> None:
    fed = HierarchicalFederation(
        Noisy,
        8,
        initial_parameters=INITIAL,
        tree=relay_tree(1, 2, 2),
        pin=["agg-2"],
        resources=TWO,
    )
    with fed, pytest.raises(ResourceError, match="redfl-site-agg-2"):
        fed.train(1)
    assert not fed.started


def test_redfl_run_runs_the_folder_redfl_tree_writes(ray_session, tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["tree", "-d", "1", "-w", "2", "-c", "2", "-r", str(tmp_path)])
    assert made.exit_code == 0, made.output
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    out = tmp_path / "run"
    ran = runner.invoke(
        app, ["run", str(folder / "hierarchy.toml"), "--rounds", "2", "--out", str(out)]
    )
    assert ran.exit_code == 0, ran.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "succeeded" and summary["schema"] == "hierarchical"
    assert summary["rounds"] == 2 and summary["accuracy"] > 0.5
    record = json.loads((out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert record["metrics"]["clients/agg-1"] == record["metrics"]["clients/agg-2"] == 10
