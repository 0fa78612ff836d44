"""Tests for the federation config: TOML loading, validation messages and overrides."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from redfl.core.config import ConfigError
from redfl.run.config import FederationConfig, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits_fedavg.toml"


def _value(value: Any) -> str:
    """Render one TOML value (enough for these tests: scalars, inline tables, arrays)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r}")


def toml_text(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text with one ``[table]`` per key of ``tables``."""
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def base_tables() -> dict[str, dict[str, Any]]:
    """A small valid config as TOML tables."""
    return {
        "federation": {"name": "unit", "rounds": 3, "seed": 7, "runtime": "local"},
        "client": {"target": "redfl.examples.digits:DigitsClient", "num_clients": 6},
        "strategy": {"fraction_fit": 0.5, "min_fit_clients": 2},
        "resources": {"split": "uniform", "worker": {"CPU": 1}},
    }


def write(tmp_path: Path, tables: Mapping[str, Mapping[str, Any]]) -> Path:
    path = tmp_path / "federation.toml"
    path.write_text(toml_text(tables), encoding="utf-8")
    return path


def config_error(tmp_path: Path, tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Load ``tables`` from a file and return the ConfigError message (it must raise)."""
    path = write(tmp_path, tables)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message, "config errors are one line"
    return message


# -- loading --------------------------------------------------------------------------------


def test_toml_file_loads_with_values_and_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, base_tables()))
    assert isinstance(cfg, FederationConfig)
    assert cfg.federation.name == "unit"
    assert cfg.federation.rounds == 3
    assert cfg.federation.seed == 7
    assert cfg.federation.runtime == "local"
    assert cfg.client.num_clients == 6
    assert cfg.client.roles == "train-eval"  # default
    assert cfg.strategy.fraction_fit == 0.5
    assert cfg.strategy.min_fit_clients == 2
    assert cfg.strategy.fraction_evaluate == 0.0  # default
    assert cfg.resources.worker == {"CPU": 1.0}
    assert cfg.resources.placement_strategy == "PACK"  # default
    assert cfg.evaluation.central is None


def test_example_config_loads_and_matches_the_file() -> None:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    cfg = load_config(EXAMPLE)
    assert cfg.federation.name == raw["federation"]["name"]
    assert cfg.federation.rounds == raw["federation"]["rounds"]
    assert cfg.federation.runtime == raw["federation"]["runtime"]
    assert cfg.client.target == raw["client"]["target"]
    assert cfg.client.num_clients == raw["client"]["num_clients"]
    assert cfg.client.options == raw["client"]["options"]
    assert cfg.strategy.min_fit_clients == raw["strategy"]["min_fit_clients"]
    assert (cfg.strategy.min_fit_clients or 1) <= cfg.client.num_clients
    assert cfg.evaluation.central == raw["evaluation"]["central"]
    assert cfg.resources.split == raw["resources"]["split"]
    assert cfg.resources.worker == {k: float(v) for k, v in raw["resources"]["worker"].items()}


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_config(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[client\ntarget = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[federation]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path)


# -- unknown keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "key", "dotted"),
    [
        ("client", "x", "client.x"),
        ("resources", "foo", "resources.foo"),
        ("federation", "round", "federation.round"),
        ("evaluation", "centrall", "evaluation.centrall"),
    ],
)
def test_unknown_key_is_named_with_its_dotted_path(
    tmp_path: Path, table: str, key: str, dotted: str
) -> None:
    tables = base_tables()
    tables.setdefault(table, {})[key] = 1
    message = config_error(tmp_path, tables)
    assert f"{dotted}: unknown key" in message


def test_unknown_table_is_named(tmp_path: Path) -> None:
    tables = base_tables()
    tables["clients"] = {"num_clients": 3}
    assert "clients: unknown key" in config_error(tmp_path, tables)


def test_misspelled_resources_key_is_refused(tmp_path: Path) -> None:
    tables = base_tables()
    tables["resources"]["worker"] = {"CPU": 1}
    tables["resources"]["bundle"] = [{"CPU": 1}]
    assert "resources.bundle: unknown key" in config_error(tmp_path, tables)


# -- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "key", "value", "field", "allowed"),
    [
        ("client", "num_clients", 0, "client.num_clients", "greater than or equal to 1"),
        ("client", "num_clients", 2_000_000, "client.num_clients", "less than or equal to"),
        ("strategy", "fraction_fit", 1.5, "strategy.fraction_fit", "less than or equal to 1"),
        ("strategy", "fraction_fit", -0.1, "strategy.fraction_fit", "greater than or equal to 0"),
        ("strategy", "fraction_evaluate", 2.0, "strategy.fraction_evaluate", "less than or equal"),
        ("strategy", "min_fit_clients", 0, "strategy.min_fit_clients", "greater than or equal"),
        ("strategy", "name", "fedsgd", "strategy.name", "'fedavg'"),
        ("resources", "worker", {"CPU": -1}, "resources.worker", ">= 0"),
        ("resources", "worker", {"CPU": 1, "GPU": -0.5}, "resources.worker", ">= 0"),
        ("resources", "num_workers", 0, "resources.num_workers", "greater than or equal to 1"),
        ("resources", "placement_strategy", "CLUSTER", "resources.placement_strategy", "STRICT"),
        ("resources", "split", "random", "resources.split", "'adaptive'"),
        ("client", "roles", "train-foo", "client.roles", "train, eval, test"),
        ("client", "roles", "", "client.roles", "train, eval, test"),
        ("client", "target", "no_colon_here", "client.target", "pattern"),
        ("federation", "address", "not an address", "federation.address", "ray://"),
        ("federation", "address", "host:port", "federation.address", "ray://"),
        ("federation", "runtime", "k8s", "federation.runtime", "'local'"),
        ("federation", "rounds", 0, "federation.rounds", "greater than or equal to 1"),
        ("federation", "seed", -1, "federation.seed", "greater than or equal to 0"),
        ("federation", "name", "has spaces", "federation.name", "pattern"),
    ],
)
def test_bad_value_names_the_field_and_what_is_allowed(
    tmp_path: Path, table: str, key: str, value: Any, field: str, allowed: str
) -> None:
    tables = base_tables()
    tables[table][key] = value
    message = config_error(tmp_path, tables)
    assert message.startswith("invalid config: ")
    assert f"{field}:" in message
    assert allowed in message


def test_bad_value_message_shows_the_value_given(tmp_path: Path) -> None:
    tables = base_tables()
    tables["strategy"]["fraction_fit"] = 1.5
    assert "(got 1.5)" in config_error(tmp_path, tables)


def test_negative_bundle_resource_is_named(tmp_path: Path) -> None:
    tables = base_tables()
    tables["resources"] = {"split": "explicit", "bundles": [{"CPU": 1}, {"GPU": -1}]}
    message = config_error(tmp_path, tables)
    assert "resources.bundles:" in message
    assert "'GPU'" in message
    assert ">= 0" in message


def test_nan_resource_amount_is_refused(tmp_path: Path) -> None:
    # A NaN amount is not ">= 0"; it must not reach worker_bundles (int(nan) crashes there).
    tables = base_tables()
    tables["resources"]["worker"] = {"CPU": float("nan")}
    message = config_error(tmp_path, tables)
    assert "resources.worker" in message


def test_several_bad_fields_are_all_named(tmp_path: Path) -> None:
    tables = base_tables()
    tables["client"]["num_clients"] = 0
    tables["strategy"]["fraction_fit"] = 3.0
    message = config_error(tmp_path, tables)
    assert "client.num_clients" in message
    assert "strategy.fraction_fit" in message


def test_missing_client_table_is_named(tmp_path: Path) -> None:
    tables = base_tables()
    del tables["client"]
    message = config_error(tmp_path, tables)
    assert "client: Field required" in message


def test_missing_client_num_clients_is_named(tmp_path: Path) -> None:
    tables = base_tables()
    del tables["client"]["num_clients"]
    assert "client.num_clients: Field required" in config_error(tmp_path, tables)


@pytest.mark.parametrize("address", ["auto", "local", "ray://head:10001", "10.0.0.1:6379"])
def test_good_addresses_are_accepted(tmp_path: Path, address: str) -> None:
    tables = base_tables()
    tables["federation"]["address"] = address
    assert load_config(write(tmp_path, tables)).federation.address == address


@pytest.mark.parametrize("roles", ["train", "eval", "train-eval", "train-eval-test"])
def test_good_roles_are_accepted(tmp_path: Path, roles: str) -> None:
    tables = base_tables()
    tables["client"]["roles"] = roles
    assert load_config(write(tmp_path, tables)).client.roles == roles


def test_min_fit_clients_above_num_clients_is_rejected(tmp_path: Path) -> None:
    tables = base_tables()
    tables["client"]["num_clients"] = 3
    tables["strategy"]["min_fit_clients"] = 4
    message = config_error(tmp_path, tables)
    assert "strategy.min_fit_clients (4)" in message
    assert "client.num_clients (3)" in message


def test_min_fit_clients_equal_to_num_clients_is_accepted(tmp_path: Path) -> None:
    tables = base_tables()
    tables["client"]["num_clients"] = 3
    tables["strategy"]["min_fit_clients"] = 3
    assert load_config(write(tmp_path, tables)).strategy.min_fit_clients == 3


def test_explicit_split_without_bundles_is_rejected(tmp_path: Path) -> None:
    tables = base_tables()
    tables["resources"] = {"split": "explicit"}
    message = config_error(tmp_path, tables)
    assert "resources:" in message
    assert "explicit" in message
    assert "bundles" in message


def test_bundles_without_explicit_split_are_rejected(tmp_path: Path) -> None:
    tables = base_tables()
    tables["resources"] = {"split": "adaptive", "bundles": [{"CPU": 1}]}
    message = config_error(tmp_path, tables)
    assert "resources:" in message
    assert "bundles" in message


def test_explicit_split_with_bundles_loads(tmp_path: Path) -> None:
    tables = base_tables()
    tables["resources"] = {"split": "explicit", "bundles": [{"CPU": 2}, {"CPU": 1, "GPU": 0.5}]}
    cfg = load_config(write(tmp_path, tables))
    assert cfg.resources.bundles == [{"CPU": 2.0}, {"CPU": 1.0, "GPU": 0.5}]


# -- overrides ------------------------------------------------------------------------------


def test_overrides_replace_rounds_and_seed(tmp_path: Path) -> None:
    path = write(tmp_path, base_tables())
    cfg = load_config(path, {"rounds": 11, "seed": 42})
    assert cfg.federation.rounds == 11
    assert cfg.federation.seed == 42
    assert cfg.federation.name == "unit"  # other keys of [federation] are kept
    assert cfg.federation.runtime == "local"


def test_overrides_create_the_federation_table_when_absent(tmp_path: Path) -> None:
    tables = base_tables()
    del tables["federation"]
    cfg = load_config(write(tmp_path, tables), {"rounds": 4})
    assert cfg.federation.rounds == 4
    assert cfg.federation.seed == 0


def test_overrides_do_not_change_the_input_dict() -> None:
    data: dict[str, Any] = {
        "federation": {"rounds": 3},
        "client": {"target": "m:C", "num_clients": 4},
    }
    parse_config(data, {"rounds": 9})
    assert data["federation"] == {"rounds": 3}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"rounds": 0}, "federation.rounds"),
        ({"seed": -5}, "federation.seed"),
        ({"seed": 2**32}, "federation.seed"),
        ({"address": "nowhere"}, "federation.address"),
        ({"bogus": 1}, "federation.bogus"),
    ],
)
def test_overrides_are_validated(tmp_path: Path, overrides: dict[str, Any], field: str) -> None:
    path = write(tmp_path, base_tables())
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    assert f"{field}:" in str(info.value)


def test_override_on_a_non_table_federation_is_a_config_error(tmp_path: Path) -> None:
    # `federation = 3` is a bad value; with an override it must still be a ConfigError.
    path = tmp_path / "federation.toml"
    path.write_text('federation = 3\n[client]\ntarget = "m:C"\nnum_clients = 4\n', encoding="utf-8")
    with pytest.raises(ConfigError) as without:
        load_config(path)
    assert "federation" in str(without.value)
    with pytest.raises(ConfigError) as info:
        load_config(path, {"rounds": 2})
    assert "federation" in str(info.value)


@pytest.mark.parametrize(
    "topology",
    [
        {},
        {"schema": "ring", "algorithm": "gossip"},
        {"schema": "hierarchical", "depth": 1, "width": 2, "lcps": 2, "min_coverage": 0.5},
    ],
)
def test_a_dumped_config_parses_back_to_itself(topology: dict[str, Any]) -> None:
    # config.json of a run folder is every field written out; resume reads it back.
    target = "redfl.nodes:GossipNode" if topology else "redfl.examples.echo:EchoClient"
    data = {"client": {"target": target, "num_clients": 4}, "topology": topology}
    config = parse_config(data)
    assert parse_config(json.loads(config.model_dump_json(by_alias=True))) == config
