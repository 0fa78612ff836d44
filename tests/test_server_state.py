"""``ServerState``: atomic safetensors + JSON checkpoints, loaded bit-exact; config digests;
strategies (wrappers included) resumed from a checkpoint continue bit-identically."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from strategy_rounds import STRATEGY_MAKERS, initial, play_round

from redfl.core.result import Failure, RoundRecord
from redfl.core.server_state import CheckpointError, ServerState, load_state, save_state
from redfl.run.config import FederationConfig, parse_config
from redfl.run.digest import NOT_IN_DIGEST, config_diff, config_digest


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Equal structure, types, dtypes, shapes and bits."""
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, np.ndarray | np.generic):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), path
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}/{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def sample_state() -> ServerState:
    rng = np.random.default_rng(0)
    parameters: dict[str, np.ndarray] = {
        "dense/weight": rng.normal(size=(3, 4)).astype(np.float32),
        "dense.bias": rng.normal(size=4),
        "half": rng.normal(size=5).astype(np.float16),
        "count": np.array([1, -2, 3], np.int64),
        "mask": np.array([True, False]),
        "scalar": np.array(0.1),
        "empty": np.zeros((0, 3), np.float32),
        "strided": rng.normal(size=(4, 4))[:, ::2],
    }
    strategy_state = {
        "inner": {"m": {"w": rng.normal(size=3)}, "v": {}},
        "clipping_norm": 0.1 + 0.2,
        "rdp": rng.random(70),
        "steps": 3,
        "tiny": 5e-324,
        "odd": [math.inf, -math.inf, math.nan, (1, "a"), None, True],
        "$weird": {"$array": "not a reference"},
        "np_scalar": np.float32(1.5),
    }
    history = [
        RoundRecord(1, 10, 9, 1, 0.123456789, 2.5, None, 0.75, {"epsilon": 1 / 3}),
        RoundRecord(2, 10, 10, 0, 0.1, None, 1.0, None, {}),
    ]
    failures = [Failure("client-3", 1, "fit", "ValueError: bad\nsecond line")]
    extra = {"node_models": {"node-0": {"w": np.arange(3.0)}}, "note": "é"}
    return ServerState(2, parameters, strategy_state, history, failures, 7, "ab" * 32, extra)


def test_a_saved_state_loads_back_bit_exact(tmp_path: Path) -> None:
    state = sample_state()
    folder = save_state(state, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "state.safetensors"]
    loaded = load_state(folder)
    for name in ("round", "seed", "config_digest", "history", "failures"):
        assert getattr(loaded, name) == getattr(state, name)
    assert_same(loaded.parameters, state.parameters)  # tobytes: C order, strided or not
    assert_same(loaded.strategy_state, state.strategy_state)
    assert_same(loaded.extra, state.extra)
    text = (folder / "state.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    assert '"strategy_state/inner/m/w"' in text and '"parameters/dense~1weight"' in text


def test_files_are_renamed_into_place_arrays_first_and_fsynced(
    tmp_path: Path, monkeypatch: Any
) -> None:
    events: list[str] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src: Any, dst: Any) -> None:
        events.append(f"rename {Path(dst).name}")
        real_replace(src, dst)

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    save_state(sample_state(), tmp_path)
    assert events == [
        "fsync",
        "rename state.safetensors",
        "fsync",  # the folder
        "fsync",
        "rename state.json",
        "fsync",
    ]


def test_unstorable_values_are_named_and_nothing_is_written(tmp_path: Path) -> None:
    state = sample_state()
    state.strategy_state["z"] = {"c": np.array([1j])}
    with pytest.raises(TypeError, match=r"strategy_state/z/c: cannot store an array of dtype"):
        save_state(state, tmp_path / "a")
    state.strategy_state["z"] = {1: 2}
    with pytest.raises(TypeError, match="strategy_state/z: dict keys must be strings"):
        save_state(state, tmp_path / "a")
    state.strategy_state["z"] = object()
    with pytest.raises(TypeError, match="strategy_state/z: cannot store a object"):
        save_state(state, tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_a_torn_or_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    first = save_state(sample_state(), tmp_path / "one")
    other = sample_state()
    other.parameters["count"] = np.array([9, 9, 9], np.int64)
    save_state(other, tmp_path / "two")
    # An overwrite interrupted between the two renames: new arrays, old JSON.
    (first / "state.safetensors").write_bytes((tmp_path / "two/state.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"does not match state\.json"):
        load_state(first)
    (tmp_path / "two/state.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing state\.json"):
        load_state(tmp_path / "two")


# -- config digest --------------------------------------------------------------------------


def config(**tables: Any) -> FederationConfig:
    return parse_config(
        {"client": {"target": "redfl.examples.digits:DigitsClient", "num_clients": 8}, **tables}
    )


def test_the_digest_ignores_only_fields_that_do_not_change_results() -> None:
    sites = {"expected": [f"site-{i}" for i in range(8)]}
    base = config(sites=sites)
    same = config(
        federation={
            "name": "other",
            "rounds": 99,
            "runtime": "local",
            "address": "auto",
            "connect_timeout": 5.0,
            "checkpoint_every": 3,
        },
        resources={"placement_strategy": "SPREAD", "client_state_mb": 1.0},
        sites={**sites, "home": "/srv/fed-home", "listen": "0.0.0.0:9443", "join_timeout": 9.0},
    )
    assert config_digest(base) == config_digest(same)
    assert config_diff(base, same) == []
    assert config_diff(base, same, everything=True) == sorted(NOT_IN_DIGEST)
    changed = config(
        federation={"seed": 1},
        strategy={"name": "fedprox", "proximal_mu": 0.5},
        resources={"num_workers": 3},
    )
    plain = config()
    assert config_digest(changed) != config_digest(plain)
    assert config_diff(plain, changed) == [
        "federation.seed",
        "resources.num_workers",
        "strategy.name",
        "strategy.proximal_mu",
    ]
    assert len(config_digest(base)) == 64


# -- strategies resumed from a checkpoint ---------------------------------------------------

STATEFUL = [
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "dp-fixed-server",
    "dp-fixed-client",
    "dp-adaptive-server",
    "dp-adaptive-client",
    "alie-dp",
]


@pytest.mark.parametrize("name", STATEFUL)
def test_a_resumed_strategy_continues_bit_identically(name: str, tmp_path: Path) -> None:
    make = STRATEGY_MAKERS[name]
    straight, x = make(), initial()
    straight_metrics = []
    for rnd in range(1, 6):
        x, metrics = play_round(straight, rnd, x)
        straight_metrics.append(metrics)
    first, y = make(), initial()
    for rnd in (1, 2):
        y, _ = play_round(first, rnd, y)
    save_state(ServerState(2, y, first.state(), [], [], 5, "d"), tmp_path)
    loaded = load_state(tmp_path)
    resumed, y = make(), loaded.parameters
    resumed.load_state(loaded.strategy_state)
    resumed_metrics = []
    for rnd in range(3, 6):
        y, metrics = play_round(resumed, rnd, y)
        resumed_metrics.append(metrics)
    for k in x:
        assert x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes(), k
    assert resumed_metrics == straight_metrics[2:]
    assert_same(resumed.state(), straight.state())
    assert (straight.state() != {} and straight_metrics[0] != straight_metrics[1]) or name[
        :2
    ] != "dp"
