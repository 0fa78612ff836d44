"""User code by import path, and the import allow-list for untrusted configs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from building import star_from_config

from redfl.core.config import ConfigError
from redfl.core.imports import (
    ImportNotAllowedError,
    check_config_imports,
    check_import_allowed,
    resolve,
)
from redfl.run.build import strategy_from_config
from redfl.run.config import parse_config

ALLOWED = ["redfl.examples", "mylab.fl"]


@pytest.mark.parametrize(
    ("target", "module"),
    [
        ("redfl.examples:X", "redfl.examples"),
        ("redfl.examples.digits:DigitsClient", "redfl.examples.digits"),
        ("mylab.fl.deep.mod:Strategy_2", "mylab.fl.deep.mod"),
    ],
)
def test_modules_under_an_allowed_prefix_pass(target: str, module: str) -> None:
    assert check_import_allowed(target, ALLOWED)[0] == module


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("redfl.examplesX:C", "module redfl.examplesX is not under an allowed prefix"),
        ("redfl:C", "module redfl is not under an allowed prefix"),
        ("os:system", "module os is not under an allowed prefix"),
        ("mylab.flx.mod:C", "not under an allowed prefix"),
        (".examples:C", "relative modules are not allowed"),
        ("redfl..examples:C", "dotted Python identifiers"),
        ("redfl.examples:C:D", "must be 'module:attribute'"),
        ("redfl.examples", "must be 'module:attribute'"),
        ("redfl.examples:", "dotted Python identifiers"),
        ("redfl.examples:os.system", "dotted Python identifiers"),
        ("redfl.examples.1x:C", "dotted Python identifiers"),
    ],
)
def test_malformed_or_outside_targets_are_refused(target: str, message: str) -> None:
    with pytest.raises(ImportNotAllowedError, match=message.replace(".", r"\.")):
        check_import_allowed(target, ALLOWED)


def test_a_bad_prefix_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="allowed prefix 'a b' is not a dotted module name"):
        check_import_allowed("a:b", ["a b"])


def write_module(tmp_path: Path, monkeypatch: Any, name: str, text: str) -> None:
    (tmp_path / f"{name}.py").write_text(text, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_a_refused_module_is_never_imported(tmp_path: Path, monkeypatch: Any) -> None:
    write_module(tmp_path, monkeypatch, "evil_redfl_mod", "raise SystemExit('imported!')\nC = 1\n")
    with pytest.raises(ImportNotAllowedError, match=r"client\.target: 'evil_redfl_mod:C'"):
        resolve("evil_redfl_mod:C", "client.target", ALLOWED)
    assert "evil_redfl_mod" not in sys.modules
    data = base(client={"target": "evil_redfl_mod:C", "num_clients": 4})
    with pytest.raises(ImportNotAllowedError, match="not under an allowed prefix"):
        star_from_config(parse_config(data), allowed_prefixes=ALLOWED)
    assert "evil_redfl_mod" not in sys.modules
    # An allowed client does not get imported either when another target is refused.
    write_module(tmp_path, monkeypatch, "okay_redfl_mod", "raise SystemExit('imported!')\n")
    data = base(
        client={"target": "okay_redfl_mod:C", "num_clients": 4},
        strategy={"target": "evil_redfl_mod:S"},
    )
    with pytest.raises(ImportNotAllowedError, match=r"strategy\.target: 'evil_redfl_mod:S'"):
        star_from_config(parse_config(data), allowed_prefixes=[*ALLOWED, "okay_redfl_mod"])
    assert "okay_redfl_mod" not in sys.modules and "evil_redfl_mod" not in sys.modules


def base(**tables: Any) -> dict[str, Any]:
    return {
        "federation": {"runtime": "local"},
        "client": {"target": "redfl.examples.digits:DigitsClient", "num_clients": 4},
        **tables,
    }


def test_every_target_of_a_config_is_checked_without_importing(monkeypatch: Any) -> None:
    config = parse_config(
        base(
            strategy={"target": "mylab.fl.strats:Mine"},
            evaluation={"central": "redfl.examples.digits:central_evaluation"},
        )
    )
    assert check_config_imports(config, ALLOWED) == [
        "redfl.examples.digits:DigitsClient",
        "mylab.fl.strats:Mine",
        "redfl.examples.digits:central_evaluation",
    ]
    assert "mylab" not in sys.modules
    for table, key, target in [
        ("client", "target", "other.client:C"),
        ("strategy", "target", "other.strat:S"),
        ("evaluation", "central", "other.evaluate:f"),
    ]:
        tables = base()
        tables[table] = {**tables.get(table, {}), key: target}
        with pytest.raises(ImportNotAllowedError) as info:
            check_config_imports(parse_config(tables), ALLOWED)
        assert str(info.value).startswith(f"invalid config: {table}.{key}: {target!r}")
    assert "other" not in sys.modules


STRATEGY_MODULE = '''
from redfl.algorithms import FedAvg, Strategy


class Halfway(FedAvg):
    """Moves the global model halfway to the FedAvg mean."""

    def __init__(self, *, step: float = 0.5, **sampling):
        super().__init__(**sampling)
        self.step = step

    def aggregate(self, rnd, current, total):
        mean = total.mean(current)
        return {k: current[k] + self.step * (mean[k] - current[k]) for k in current}


class Plain(Strategy):
    def __init__(self, alpha, beta=1):
        super().__init__()
        self.alpha, self.beta = alpha, beta


class NotAStrategy:
    pass
'''


@pytest.fixture
def user_strategies(tmp_path: Path, monkeypatch: Any) -> str:
    write_module(tmp_path, monkeypatch, "user_strategies_mod", STRATEGY_MODULE)
    return "user_strategies_mod"


def test_a_strategy_by_import_path_gets_its_parameters(user_strategies: str) -> None:
    strategy: Any = strategy_from_config(
        parse_config(
            base(
                strategy={"target": f"{user_strategies}:Halfway", "step": 0.25, "fraction_fit": 0.5}
            )
        )
    )
    assert type(strategy).__name__ == "Halfway"
    assert strategy.step == 0.25 and strategy.fraction_fit == 0.5
    plain: Any = strategy_from_config(
        parse_config(base(strategy={"target": f"{user_strategies}:Plain", "alpha": 3}))
    )
    assert (plain.alpha, plain.beta, plain.fraction_fit) == (3, 1, 1.0)


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ({"target": "M:Halfway", "gamma": 1}, "strategy.gamma: not a parameter of M:Halfway"),
        ({"target": "M:Plain", "beta": 2}, "strategy.alpha: required by M:Plain"),
        ({"target": "M:Plain", "alpha": 1, "fraction_fit": 0.5}, "strategy.fraction_fit: not a"),
        ({"target": "M:NotAStrategy"}, "strategy.target: M:NotAStrategy is not a Strategy"),
        ({"target": "M:Missing"}, "strategy.target: cannot import 'M:Missing'"),
        ({"target": "M:Halfway", "min_fit_clients": 0}, "strategy.min_fit_clients"),
    ],
)
def test_bad_strategy_targets_are_named(
    user_strategies: str, strategy: dict[str, Any], message: str
) -> None:
    strategy = {**strategy, "target": strategy["target"].replace("M:", f"{user_strategies}:")}
    with pytest.raises(ConfigError) as info:
        strategy_from_config(parse_config(base(strategy=strategy)))
    assert message.replace("M:", f"{user_strategies}:") in str(info.value)


def test_name_and_target_together_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"give 'name' .* or 'target', not both"):
        parse_config(base(strategy={"name": "fedavg", "target": "a.b:C"}))


def test_a_strategy_target_runs_a_federation(user_strategies: str) -> None:
    data = base(strategy={"target": f"{user_strategies}:Halfway", "step": 1.0})
    data["federation"]["rounds"] = 1
    halfway = star_from_config(parse_config(data)).train(1).parameters
    data["strategy"] = {"name": "fedavg"}
    fedavg = star_from_config(parse_config(data)).train(1).parameters
    assert halfway is not None and fedavg is not None
    assert all((halfway[k] == fedavg[k]).all() for k in fedavg)  # step 1: the mean itself
