"""``[strategy]``, ``[privacy]`` and ``[attack]`` in the TOML config, and ``redfl strategies``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from building import star_from_config
from typer.testing import CliRunner

from redfl.algorithms import STRATEGIES, FedAdam, FedTrimmedAvg
from redfl.algorithms.registry import StrategySpec
from redfl.attacks import LittleIsEnough
from redfl.cli import app
from redfl.core.config import ConfigError
from redfl.privacy import DPAdaptiveClipping, DPFixedClipping
from redfl.run.config import load_config, parse_config


def config(strategy: dict[str, Any], clients: int = 10, **tables: Any) -> dict[str, Any]:
    return {
        "federation": {"runtime": "local"},
        "client": {"target": "redfl.examples.digits:DigitsClient", "num_clients": clients},
        "strategy": strategy,
        **tables,
    }


def build_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        star_from_config(parse_config(data))
    return str(caught.value)


def test_config_names_are_the_registry() -> None:
    for name in STRATEGIES:
        assert parse_config(config({"name": name})).strategy.name == name
    with pytest.raises(ConfigError, match=r"strategy\.name: Input should be"):
        parse_config(config({"name": "fedavg2"}))
    STRATEGIES.register("fedavg2", StrategySpec("fedavg2", FedAdam, "a test"))
    try:
        assert parse_config(config({"name": "fedavg2"})).strategy.name == "fedavg2"
    finally:
        STRATEGIES.unregister("fedavg2")
    assert "fedavg2" not in STRATEGIES


def test_named_strategy_gets_its_parameters(tmp_path: Path) -> None:
    path = tmp_path / "adam.toml"
    path.write_text(
        '[federation]\nruntime = "local"\n'
        '[client]\ntarget = "redfl.examples.digits:DigitsClient"\nnum_clients = 4\n'
        '[strategy]\nname = "fedadam"\neta = 0.02\ntau = 0.001\nfraction_fit = 0.5\n',
        encoding="utf-8",
    )
    strategy = star_from_config(load_config(path)).strategy
    assert isinstance(strategy, FedAdam)
    assert (strategy.eta, strategy.tau, strategy.fraction_fit) == (0.02, 0.001, 0.5)
    assert strategy.beta_1 == 0.9  # default kept


@pytest.mark.parametrize(
    ("strategy", "clients", "message"),
    [
        ({"name": "fedtrimmedavg", "beta": 0.5}, 10, "strategy.beta: must be in [0, 0.5), got 0.5"),
        ({"name": "krum", "f": 4}, 10, "strategy.f: Krum needs 2f + 3 = 11 clients per round"),
        ({"name": "krum", "f": 2, "min_fit_clients": 5}, 10, "strategy.f: Krum needs 2f + 3 = 7"),
        ({"name": "bulyan", "f": 2}, 10, "strategy.f: Bulyan needs 4f + 3 = 11"),
        ({"name": "fedadam", "beta1": 0.9}, 10, "strategy.beta1: not a parameter of fedadam"),
        ({"name": "krum", "f": 1.5}, 10, "strategy.f: Input should be a valid integer, got 1.5"),
        ({"name": "fedavgm", "server_momentum": 1.0}, 10, "strategy.server_momentum: must be in"),
    ],
)
def test_bad_strategy_parameter_names_the_dotted_field(
    strategy: dict[str, Any], clients: int, message: str
) -> None:
    assert message in build_error(config(strategy, clients))


def test_unknown_strategy_name_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.name: Input should be 'fedavg'"):
        parse_config(config({"name": "fedsgd"}))


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"privacy": {"mode": "fixed", "noise_multiplier": -1}}, "privacy.noise_multiplier"),
        ({"privacy": {"mode": "secret"}}, "privacy.mode"),
        ({"attack": {"kind": "sign_flip"}}, "needs malicious_fraction > 0"),
        ({"attack": {"malicious_fraction": 0.2}}, "needs an attack kind"),
        ({"attack": {"kind": "sign_flip", "malicious_fraction": 2}}, "attack.malicious_fraction"),
    ],
)
def test_bad_privacy_and_attack_tables_are_named(tables: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(config({"name": "fedavg"}, **tables))


def test_adaptive_privacy_bound_is_named_at_build_time() -> None:
    data = config(
        {"name": "fedavg"},
        privacy={"mode": "adaptive", "noise_multiplier": 5.0, "clipped_count_stddev": 1.0},
    )
    assert "privacy.clipped_count_stddev: must exceed noise_multiplier / 2" in build_error(data)


def test_privacy_and_alie_wrap_the_strategy() -> None:
    data = config(
        {"name": "fedtrimmedavg", "beta": 0.1},
        privacy={"mode": "adaptive", "clipping_norm": 0.5, "noise_multiplier": 0.5},
        attack={"kind": "alie", "malicious_fraction": 0.2},
    )
    strategy = star_from_config(parse_config(data)).strategy
    assert isinstance(strategy, LittleIsEnough) and len(strategy.attackers) == 2
    assert isinstance(strategy.inner, DPAdaptiveClipping)
    assert strategy.inner.clipping_norm == 0.5
    assert isinstance(strategy.inner.inner, FedTrimmedAvg) and strategy.inner.inner.beta == 0.1
    fixed = star_from_config(parse_config(config({}, privacy={"mode": "fixed"}))).strategy
    assert type(fixed) is DPFixedClipping


def test_cli_run_exits_2_naming_the_strategy_parameter(tmp_path: Path) -> None:
    path = tmp_path / "krum.toml"
    path.write_text(
        '[federation]\nruntime = "local"\n'
        '[client]\ntarget = "redfl.examples.digits:DigitsClient"\nnum_clients = 6\n'
        '[strategy]\nname = "krum"\nf = 2\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "strategy.f: Krum needs 2f + 3 = 7 clients per round for f=2, but a round has 6" in (
        result.stderr
    )


def test_cli_strategies_lists_names_parameters_and_defaults() -> None:
    result = CliRunner().invoke(app, ["strategies"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for name, spec in STRATEGIES.items():
        header = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
        where = "pre-aggregates on workers" if spec.cls.weighted_sum else "individual updates"
        assert where in lines[header]
    krum = next(i for i, line in enumerate(lines) if line.startswith("krum "))
    assert lines[krum + 1].split() == ["parameters:", "f=1"]
    trimmed = next(i for i, line in enumerate(lines) if line.startswith("fedtrimmedavg "))
    assert lines[trimmed + 1].split() == ["parameters:", "beta=0.2"]
    adam = next(i for i, line in enumerate(lines) if line.startswith("fedadam "))
    assert "eta=0.1" in lines[adam + 1] and "tau=1e-09" in lines[adam + 1]


def test_max_update_norm_in_the_strategy_table() -> None:
    strategy = star_from_config(parse_config(config({"max_update_norm": 5.0}))).strategy
    assert strategy.max_update_norm == 5.0
    assert strategy.update_policy(1, ["client-0"]).max_update_norm == 5.0
    with pytest.raises(ConfigError, match=r"strategy\.max_update_norm: Input should be greater"):
        parse_config(config({"max_update_norm": 0.0}))
