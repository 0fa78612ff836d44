"""Search-space specs (``redfl tune --param``): parsing, errors, applying to a config."""

from __future__ import annotations

from typing import Any

import pytest

from redfl.run.search_space import (
    ALLOWED_FORMS,
    ParamSpec,
    SearchSpaceError,
    apply_params,
    example_values,
    parse_param,
    parse_params,
)


def test_every_form_parses() -> None:
    assert parse_param("strategy.eta=loguniform:1e-3:1e-1") == ParamSpec(
        ("strategy", "eta"), "loguniform", 1e-3, 1e-1
    )
    assert parse_param("strategy.eta=uniform:0:2") == ParamSpec(
        ("strategy", "eta"), "uniform", 0.0, 2.0
    )
    assert parse_param("client.options.epochs=randint:1:4") == ParamSpec(
        ("client", "options", "epochs"), "randint", 1.0, 4.0
    )
    grid = parse_param("client.options.partition=grid:iid,dirichlet")
    assert grid.kind == "grid" and grid.values == ("iid", "dirichlet")


def test_choice_values_are_read_as_toml_scalars() -> None:
    spec = parse_param("x.y=choice:1, 0.5,true,adam")
    assert spec.values == (1, 0.5, True, "adam")
    assert [type(v) for v in spec.values] == [int, float, bool, str]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("lr=choice:0.1", "dotted PATH"),
        ("strategy.eta", "PATH=KIND:ARGS"),
        ("strategy.eta=normal:0:1", "unknown kind 'normal'"),
        ("strategy.eta=uniform:1", "two bounds"),
        ("strategy.eta=uniform:a:1", "'a' is not a number"),
        ("strategy.eta=uniform:2:1", "lower bound 2 must be below the upper bound 1"),
        ("strategy.eta=loguniform:0:1", "must be positive"),
        ("strategy.eta=randint:1.5:4", "'1.5' is not an integer"),
        ("strategy.eta=choice:", "no arguments"),
        ("strategy.eta=choice:1,,2", "empty value"),
        ("strategy.eta=uniform:nan:1", "not a finite number"),
    ],
)
def test_a_bad_spec_names_itself_the_reason_and_the_allowed_forms(spec: str, reason: str) -> None:
    with pytest.raises(SearchSpaceError) as info:
        parse_param(spec)
    message = str(info.value)
    assert message.startswith(f"--param {spec!r}: ")
    assert reason in message
    assert message.endswith(f"allowed forms: {ALLOWED_FORMS}")


def test_a_path_given_twice_is_refused() -> None:
    with pytest.raises(SearchSpaceError, match=r"'strategy\.eta' is given more than once"):
        parse_params(["strategy.eta=uniform:0:1", "strategy.eta=choice:1,2"])


def test_apply_sets_nested_paths_without_touching_the_original() -> None:
    base: dict[str, Any] = {
        "strategy": {"name": "fedadam"},
        "client": {"options": {"lr": 0.5, "epochs": 2}},
    }
    applied = apply_params(base, {"strategy.eta": 0.01, "client.options.lr": 0.1, "a.b.c": 1})
    assert applied == {
        "strategy": {"name": "fedadam", "eta": 0.01},
        "client": {"options": {"lr": 0.1, "epochs": 2}},
        "a": {"b": {"c": 1}},
    }
    assert base["client"]["options"]["lr"] == 0.5
    assert "eta" not in base["strategy"]


def test_apply_refuses_a_path_through_a_value() -> None:
    with pytest.raises(SearchSpaceError, match=r"'strategy\.name' is a value, not a table"):
        apply_params({"strategy": {"name": "fedavg"}}, {"strategy.name.x": 1})


def test_example_values_take_the_lower_bound_or_the_first_value() -> None:
    params = parse_params(["a.b=loguniform:1e-3:1", "a.c=randint:2:5", "a.d=grid:x,y"])
    assert example_values(params) == {"a.b": 1e-3, "a.c": 2, "a.d": "x"}
    assert type(example_values(params)["a.c"]) is int
