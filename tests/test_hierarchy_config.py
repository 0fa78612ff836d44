"""The hierarchical schema from a config: `redfl tree`'s folder runs with redfl.run, the
[topology] keys of a hierarchy are checked, and a bad value names its field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import redfl
from redfl import HierarchicalFederation
from redfl.algorithms import Krum
from redfl.core.config import ConfigError
from redfl.provision.folder import write_folder
from redfl.run.config import load_config, parse_config
from redfl.run.prepare import prepare
from redfl.schemas.hierarchical import HierarchicalTopology
from redfl.topology import relay_tree
from redfl.topology.tree_file import TreeFile

CLIENT = {"target": "redfl.examples.echo:EchoClient", "num_clients": 12}


def provision(tmp_path: Path) -> Path:
    folder = tmp_path / "demo"
    write_folder(folder, TreeFile("demo", 9000, relay_tree(1, 2, 2)))
    return folder


def test_the_folder_redfl_tree_writes_runs(tmp_path: Path) -> None:
    folder = provision(tmp_path)
    config = load_config(folder / "hierarchy.toml")
    assert isinstance(config.topology, HierarchicalTopology)
    assert config.topology.tree_file == str(folder / "tree.json")  # read beside the config
    outcome = redfl.run(
        folder / "hierarchy.toml",
        out=tmp_path / "run",
        overrides={"rounds": 2, "runtime": "local"},
    )
    assert outcome.status == "succeeded", outcome.summary
    assert outcome.summary["schema"] == "hierarchical" and outcome.summary["rounds"] == 2
    assert outcome.summary["accuracy"] > 0.5
    lines = (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[-1])
    assert record["metrics"]["clients/agg-1"] == 10 == record["metrics"]["clients/agg-2"]
    assert record["sampled"] == 20 and record["metrics"]["coverage"] == 1.0
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert {"events.jsonl", "metrics.jsonl", "model.safetensors", "summary.json"} <= set(names)
    types = [json.loads(x)["type"] for x in (tmp_path / "run" / "events.jsonl").open()]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("round_finished") == 2


def base(**topology: Any) -> dict[str, Any]:
    return {"client": dict(CLIENT), "topology": {"schema": "hierarchical", **topology}}


def test_an_inline_tree_with_a_leaf_strategy_builds_the_federation() -> None:
    data = base(depth=1, width=2, lcps=2, clients_per_lcp=3, leaf_strategy="krum")
    data["topology"]["leaf_params"] = {"f": 0}
    data["topology"]["min_coverage"] = 0.75
    federation = prepare(data).federation
    assert isinstance(federation, HierarchicalFederation)
    assert [s.name for s in federation.tree.lcps] == ["lcp-1-1", "lcp-1-2", "lcp-2-1", "lcp-2-2"]
    assert federation.assignment["lcp-2-1"] == ("client-6", "client-7", "client-8")
    assert isinstance(federation.leaf_strategy, Krum) and federation.leaf_strategy.f == 0
    assert federation.min_coverage == 0.75


def test_timeouts_in_the_federation_table_reach_the_hierarchy() -> None:
    data = base(depth=1, width=2, lcps=2)
    data["federation"] = {"client_timeout": 2.5, "round_timeout": 30, "max_worker_restarts": 1}
    federation = prepare(data).federation
    assert isinstance(federation, HierarchicalFederation)
    assert (federation.client_timeout, federation.round_timeout) == (2.5, 30.0)
    assert federation.max_worker_restarts == 1
    assert federation.subtree_timeout is None


def test_subtree_timeout_reaches_the_hierarchy_and_needs_a_runtime_that_interrupts() -> None:
    data = base(depth=1, width=2, lcps=2, subtree_timeout=12.5)
    federation = prepare(data).federation
    assert isinstance(federation, HierarchicalFederation)
    assert federation.subtree_timeout == 12.5
    data["federation"] = {"runtime": "local"}
    with pytest.raises(ConfigError, match="subtree_timeout needs a runtime that can interrupt"):
        prepare(data)


@pytest.mark.parametrize(
    ("topology", "message"),
    [
        ({"schema": "star", "tree_file": "t.json"}, "topology.tree_file: unknown key"),
        ({"schema": "star", "min_coverage": 0.5}, "topology.min_coverage: unknown key"),
        ({}, "needs either 'tree_file' or all of 'depth', 'width' and 'lcps'"),
        ({"depth": 2, "width": 2}, "needs either 'tree_file' or all of"),
        ({"tree_file": "t.json", "depth": 2, "width": 2, "lcps": 2}, "needs either"),
        ({"depth": 6, "width": 2, "lcps": 2}, "topology.depth: Input should be less than"),
        ({"depth": 1, "width": 2, "lcps": 2, "min_coverage": 0}, "topology.min_coverage"),
        (
            {"depth": 1, "width": 2, "lcps": 2, "subtree_timeout": 0},
            r"topology.subtree_timeout: Input should be greater than 0 \(got 0\)",
        ),
        ({"schema": "star", "subtree_timeout": 5}, "topology.subtree_timeout: unknown key"),
        ({"depth": 1, "width": 2, "lcps": 2, "leaf_strategy": "nope"}, "topology.leaf_strategy"),
        (
            {"depth": 1, "width": 2, "lcps": 2, "leaf_strategy": "fedavg"},
            "topology.leaf_strategy: Input should be 'fedmedian', 'fedtrimmedavg', 'krum', "
            "'multikrum' or 'bulyan'",
        ),
        (
            {"depth": 1, "width": 2, "lcps": 2, "leaf_params": {"f": 1}},
            "topology: 'leaf_params' given without 'leaf_strategy'",
        ),
    ],
)
def test_bad_topology_tables_name_the_field(topology: dict[str, Any], message: str) -> None:
    data = {"client": dict(CLIENT), "topology": {"schema": "hierarchical", **topology}}
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


@pytest.mark.parametrize(
    ("topology", "message"),
    [
        (
            {"depth": 1, "width": 2, "lcps": 2, "clients_per_lcp": 2},
            "topology.clients_per_lcp: 2 x 4 LCPs = 8 clients, but client.num_clients is 12",
        ),
        (
            {"depth": 1, "width": 2, "lcps": 2, "leaf_strategy": "krum", "leaf_params": {"g": 1}},
            "topology.leaf_params.g: not a parameter of krum",
        ),
        (
            {"tree_file": "/nonexistent/tree.json"},
            "topology.tree_file: tree file not found: /nonexistent/tree.json",
        ),
        (
            {"depth": 1, "width": 2, "lcps": 2, "pin": ["relay-1"]},
            "pin: 'relay-1' is not an aggregator or LCP",
        ),
    ],
)
def test_build_errors_name_the_field(topology: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prepare(base(**topology))


def test_a_root_strategy_needing_single_updates_is_a_config_error() -> None:
    data = base(depth=1, width=2, lcps=2)
    data["strategy"] = {"name": "fedmedian"}
    with pytest.raises(ConfigError, match="FedMedian needs every client's update"):
        prepare(data)
