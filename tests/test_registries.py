"""Registries: one per concept; the config's allowed names are theirs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from redfl.core.config import ConfigError, parse_config
from redfl.core.registries import ALGORITHMS, ATTACKS, RUNTIMES, SCHEMAS, STRATEGIES
from redfl.core.registry import Registry, UnknownNameError
from redfl.schemas.registry import SchemaSpec


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


def test_fillers_are_imported_on_first_read(tmp_path: Path, monkeypatch: Any) -> None:
    colours = Registry[str]("colour", ["colour_filler_mod"])
    (tmp_path / "colour_filler_mod.py").write_text(
        "import builtins\nbuiltins._redfl_test_colours.register('teal', '#008080')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("builtins._redfl_test_colours", colours, raising=False)
    assert "colour_filler_mod" not in sys.modules
    assert colours.names() == ["teal"]
    assert "colour_filler_mod" in sys.modules
    monkeypatch.delitem(sys.modules, "colour_filler_mod")


def test_the_shipped_registries_hold_the_shipped_names() -> None:
    assert STRATEGIES.names()[:3] == ["fedavg", "fedavgm", "fedprox"] and len(STRATEGIES) == 12
    assert ATTACKS.names() == ["sign_flip", "gaussian", "label_flip", "alie"]
    assert ALGORITHMS.names() == ["gossip", "dsgd", "ring_sequential"]
    assert SCHEMAS.names() == ["star", "ring", "mesh", "k_connect", "custom", "hierarchical"]
    assert RUNTIMES.names() == ["ray", "local"]


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
            "topology.schema: Input should be 'star', 'ring', 'mesh', 'k_connect', 'custom' or "
            "'hierarchical' (got 'torus')",
        ),
        (
            {"topology": {"schema": "ring", "algorithm": "push_sum"}},
            "topology.algorithm: Input should be 'gossip', 'dsgd' or 'ring_sequential'",
        ),
        (
            {"federation": {"runtime": "dask"}},
            "federation.runtime: Input should be 'ray' or 'local' (got 'dask')",
        ),
        (
            {"topology": {"schema": "mesh", "algorithm": "gossip", "k": 2}},
            "'k' is required with schema 'k_connect', and only used there",
        ),
    ],
)
def test_config_errors_list_the_registered_names(tables: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(base(**tables))
    assert message in str(info.value)


def test_a_newly_registered_schema_is_accepted_by_the_config() -> None:
    data = base(topology={"schema": "torus", "algorithm": "gossip", "k": 3})
    with pytest.raises(ConfigError, match=r"topology\.schema"):
        parse_config(data)
    SCHEMAS.register("torus", SchemaSpec(True, None, requires=("k",)))
    try:
        assert parse_config(data).topology.schema_ == "torus"
        with pytest.raises(ConfigError, match="'k' is required with schema 'k_connect' or 'torus'"):
            parse_config(base(topology={"schema": "torus", "algorithm": "gossip"}))
    finally:
        SCHEMAS.unregister("torus")


def test_the_cli_lists_the_registered_strategies() -> None:
    from typer.testing import CliRunner

    from redfl.cli import app

    result = CliRunner().invoke(app, ["strategies"])
    assert result.exit_code == 0
    for name in STRATEGIES:
        assert name in result.output


def test_registered_runtimes_and_algorithms_are_what_they_claim() -> None:
    from redfl.core.imports import resolve
    from redfl.nodes.decentralized import DecentralizedNode
    from redfl.runtime.backend import Backend

    for name, target in RUNTIMES.items():
        backend = resolve(target, f"runtime {name}")
        assert isinstance(backend, type) and issubclass(backend, Backend), name
    for name, node in ALGORITHMS.items():
        assert issubclass(node, DecentralizedNode), name
    assert ALGORITHMS.meta("ring_sequential")["schemas"] == ("ring", "custom")
