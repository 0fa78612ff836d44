"""Registries: one per concept; the config's allowed names are theirs."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import Field

from redfl.algorithms.registry import STRATEGIES
from redfl.attacks.registry import ATTACKS
from redfl.core.config import ConfigError
from redfl.core.registry import Registry, UnknownNameError
from redfl.nodes.algorithms import ALGORITHMS
from redfl.run.build import federation_from_config
from redfl.run.config import parse_config
from redfl.runtime.registry import RUNTIMES, RuntimeOptions
from redfl.runtime.resources import ResourcesConfig
from redfl.schemas import SCHEMAS
from redfl.schemas.named import GraphTopology, graph_from_parts
from redfl.schemas.registry import SchemaSpec
from redfl.topology import ring
from redfl.topology.graph import Topology


def test_get_names_the_concept_and_lists_the_allowed_names() -> None:
    sizes = Registry[int]("size")
    sizes.register("small", 1)
    sizes.register("large", 3, note="big")
    assert sizes.names() == ["small", "large"]  # registration order
    assert sizes.get("large") == 3 and sizes.meta("large")["note"] == "big"
    with pytest.raises(UnknownNameError) as info:
        sizes.get("medium")
    assert str(info.value) == "unknown size 'medium'; choose one of ['large', 'small']"
    with pytest.raises(KeyError):
        sizes["medium"]


def test_a_name_cannot_be_registered_twice_with_different_values() -> None:
    sizes = Registry[int]("size")
    sizes.register("small", 1)
    sizes.register("small", 1)  # the same value again: a module imported twice
    with pytest.raises(ValueError, match="size 'small' is already registered as 1"):
        sizes.register("small", 2)
    with pytest.raises(ValueError, match="non-empty string"):
        sizes.register("", 2)
    sizes.unregister("small")
    assert "small" not in sizes and len(sizes) == 0


def test_validate_returns_a_registered_name_and_lists_the_allowed_ones() -> None:
    sizes = Registry[int]("size")
    sizes.register("small", 1)
    assert sizes.validate("small") == "small" and sizes.validate("none", also=("none",)) == "none"
    with pytest.raises(ValueError, match="Input should be 'none' or 'small'"):
        sizes.validate("medium", also=("none",))


def test_the_shipped_registries_hold_the_shipped_names() -> None:
    assert STRATEGIES.names()[:3] == ["fedavg", "fedavgm", "fedprox"] and len(STRATEGIES) == 12
    assert ATTACKS.names() == ["sign_flip", "gaussian", "label_flip", "alie"]
    assert ALGORITHMS.names() == ["gossip", "dsgd", "ring_sequential"]
    assert SCHEMAS.names() == ["star", "hierarchical", "ring", "mesh", "k_connect", "custom"]
    assert RUNTIMES.names() == ["ray", "local", "sites"]


def base(**tables: Any) -> dict[str, Any]:
    return {"client": {"target": "m:C", "num_clients": 4}, **tables}


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        (
            {"attack": {"kind": "poison", "malicious_fraction": 0.5}},
            "attack.kind: Input should be 'none', 'sign_flip', 'gaussian', 'label_flip' or "
            "'alie' (got 'poison')",
        ),
        (
            {"topology": {"schema": "torus"}},
            "topology.schema: Input should be 'star', 'hierarchical', 'ring', 'mesh', 'k_connect' "
            "or 'custom' (got 'torus')",
        ),
        (
            {"topology": {"schema": "ring", "algorithm": "push_sum"}},
            "topology.algorithm: Input should be 'gossip', 'dsgd' or 'ring_sequential'",
        ),
        (
            {"federation": {"runtime": "dask"}},
            "federation.runtime: Input should be 'ray', 'local' or 'sites' (got 'dask')",
        ),
        (
            {"topology": {"schema": "mesh", "algorithm": "gossip", "k": 2}},
            "topology.k: unknown key",
        ),
        (
            {"topology": {"schema": "k_connect", "algorithm": "gossip"}},
            "topology.k: Field required",
        ),
        (
            {"topology": {"schema": "star", "algorithm": "gossip"}},
            "topology.algorithm: unknown key",
        ),
    ],
)
def test_config_errors_list_the_registered_names(tables: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(base(**tables))
    assert message in str(info.value)


class TorusTopology(GraphTopology):
    """A test schema: nodes on a ring (a stand-in for a torus), which needs ``k``."""

    schema_: Literal["torus"] = Field(default="torus", alias="schema")
    k: int = Field(ge=1)

    def topology(self, nodes: int) -> Topology:
        return ring(nodes)


def test_a_newly_registered_schema_is_accepted_by_the_config_and_builds() -> None:
    data = base(topology={"schema": "torus", "algorithm": "gossip", "k": 3})
    with pytest.raises(ConfigError, match=r"topology\.schema: Input should be .* \(got 'torus'\)"):
        parse_config(data)
    SCHEMAS.register("torus", SchemaSpec(TorusTopology, graph_from_parts, round_driven=False))
    try:
        config = parse_config(
            {**data, "client": {"target": "redfl.nodes:GossipNode", "num_clients": 4}}
        )
        assert isinstance(config.topology, TorusTopology) and config.topology.k == 3
        federation = federation_from_config(config)
        assert [n.node_id for n in federation.nodes] == [f"node-{i}" for i in range(4)]
        assert federation.topology is not None and federation.topology.num_edges() == 8
        with pytest.raises(ConfigError, match=r"topology\.k: Field required"):
            parse_config(base(topology={"schema": "torus", "algorithm": "gossip"}))
    finally:
        SCHEMAS.unregister("torus")
    with pytest.raises(ConfigError, match=r"topology\.schema"):
        parse_config(data)


def test_the_cli_lists_the_registered_strategies() -> None:
    from typer.testing import CliRunner

    from redfl.cli import app

    result = CliRunner().invoke(app, ["strategies"])
    assert result.exit_code == 0
    for name in STRATEGIES:
        assert name in result.output


def test_registered_runtimes_and_algorithms_are_what_they_claim() -> None:
    from redfl.nodes.decentralized import DecentralizedNode
    from redfl.runtime.backend import Backend

    local = RUNTIMES.get("local").make(RuntimeOptions(resources=ResourcesConfig()))
    assert isinstance(local, Backend) and not RUNTIMES.get("local").supervised
    assert RUNTIMES.get("ray").supervised and RUNTIMES.get("ray").recreates
    sites = RUNTIMES.get("sites")
    assert sites.supervised and not sites.recreates and not sites.movable
    with pytest.raises(ValueError, match=r"runtime 'sites' needs a \[sites\] table"):
        sites.make(RuntimeOptions())
    for name, node in ALGORITHMS.items():
        assert issubclass(node, DecentralizedNode), name
    assert ALGORITHMS.meta("ring_sequential")["schemas"] == ("ring", "custom")
