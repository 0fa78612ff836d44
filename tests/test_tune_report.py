"""A trial's reports to Tune (no Ray): metrics per round, the server state as checkpoint,
and which configs may start from a checkpoint."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from redfl.core.config import ConfigError
from redfl.core.events import CheckpointSaved, RoundFinished, RoundStarted
from redfl.core.result import RoundRecord
from redfl.core.server_state import CheckpointError, ServerState, save_state
from redfl.run.config import FederationConfig, parse_config
from redfl.run.digest import config_digest
from redfl.run.search_space import apply_params
from redfl.run.tune_report import TuneReporter, load_checkpoint, round_metrics

BASE: dict[str, Any] = {
    "federation": {"rounds": 4, "seed": 3},
    "client": {"target": "redfl.examples.echo:EchoClient", "num_clients": 4, "options": {}},
    "strategy": {"name": "fedadam", "eta": 0.05, "tau": 0.001},
}
MUTABLE = ("strategy.eta", "client.options.size")


class Collected:
    """A report function that keeps what it was given (and each checkpoint's files)."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.checkpoints: list[dict[str, bytes] | None] = []

    def __call__(self, metrics: Mapping[str, float], writer: object) -> None:
        self.metrics.append(dict(metrics))
        if writer is None:
            self.checkpoints.append(None)
            return
        with tempfile.TemporaryDirectory() as folder:
            writer(Path(folder))  # type: ignore[operator]
            self.checkpoints.append({p.name: p.read_bytes() for p in Path(folder).iterdir()})


def record(rnd: int, accuracy: float | None = 0.5, loss: float = 1.0) -> RoundRecord:
    return RoundRecord(rnd, 4, 4, 0, 0.1, 2.0, loss, accuracy, {"fit_loss": 2.0, "x": math.nan})


def state(config: FederationConfig, rnd: int = 2) -> ServerState:
    moments = {"w": np.linspace(-1.0, 1.0, 5)}
    return ServerState(
        rnd,
        {"w": np.arange(5, dtype=np.float32)},
        {"m": moments, "v": {"w": moments["w"] ** 2}},
        [record(r) for r in range(1, rnd + 1)],
        [],
        config.federation.seed,
        config_digest(config),
    )


def checkpoint(folder: Path, config: FederationConfig) -> Path:
    """A Tune checkpoint as a trial writes it: the state and the run's config.json."""
    save_state(state(config), folder)
    (folder / "config.json").write_text(config.model_dump_json(by_alias=True), encoding="utf-8")
    return folder


def test_a_round_is_reported_with_the_state_saved_after_it_and_the_config(
    tmp_path: Path,
) -> None:
    config = parse_config(BASE)
    run = tmp_path / "run"
    saved = checkpoint(run / "checkpoints" / "round-000003", config)
    collected = Collected()
    reporter = TuneReporter(
        collected, "accuracy", run / "checkpoints" / "round-000003" / "config.json"
    )
    reporter.on_event(RoundStarted(3, 4))
    reporter.on_event(RoundFinished(record(3, accuracy=0.75)))
    assert collected.metrics == []  # waits for the state the run saves next
    reporter.on_event(CheckpointSaved(3, str(saved)))
    assert collected.metrics == [
        {
            "round": 3.0,
            "accuracy": 0.75,
            "loss": 1.0,
            "train_loss": 2.0,
            "seconds": 0.1,
            "succeeded": 4.0,
            "failed": 0.0,
            "fit_loss": 2.0,
        }
    ]
    [files] = collected.checkpoints
    assert files is not None
    assert sorted(files) == ["config.json", "state.json", "state.safetensors"]
    assert files["state.safetensors"] == (saved / "state.safetensors").read_bytes()
    reporter.on_event(CheckpointSaved(3, str(saved)))  # a second save of the round: no report
    assert len(collected.metrics) == 1


def test_a_metric_the_record_lacks_is_named_with_what_it_has(tmp_path: Path) -> None:
    reporter = TuneReporter(Collected(), "accuracy", tmp_path / "config.json")
    with pytest.raises(ConfigError, match=r"metric: 'accuracy' is not in round 1's record"):
        reporter.on_event(RoundFinished(record(1, accuracy=None)))


def test_a_checkpoint_loads_the_whole_state_for_the_same_config(tmp_path: Path) -> None:
    config = parse_config(BASE)
    loaded = load_checkpoint(checkpoint(tmp_path, config), parse_config(BASE), MUTABLE)
    expected = state(config)
    assert loaded.round == 2
    assert [r.round for r in loaded.history] == [1, 2]
    np.testing.assert_array_equal(
        loaded.strategy_state["m"]["w"], expected.strategy_state["m"]["w"]
    )
    np.testing.assert_array_equal(loaded.parameters["w"], expected.parameters["w"])


def test_mutated_values_may_differ_and_rounds_too(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path, parse_config(BASE))
    mutated = apply_params(
        BASE, {"strategy.eta": 0.06, "client.options.size": 7, "federation.rounds": 9}
    )
    assert load_checkpoint(folder, parse_config(mutated), MUTABLE).round == 2


def test_any_other_difference_is_refused_naming_the_fields(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path, parse_config(BASE))
    other = apply_params(BASE, {"strategy.eta": 0.06, "strategy.tau": 0.1, "federation.seed": 4})
    with pytest.raises(ConfigError) as caught:
        load_checkpoint(folder, parse_config(other), MUTABLE)
    message = str(caught.value)
    assert "differs from the one that saved the state in federation.seed, strategy.tau;" in message
    assert "only the mutated values may differ (client.options.size, strategy.eta)" in message
    with pytest.raises(ConfigError, match=r"in strategy\.eta; .* may differ \(none\)"):
        load_checkpoint(folder, parse_config(apply_params(BASE, {"strategy.eta": 0.06})))


def test_a_config_file_that_did_not_make_the_state_is_refused(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path, parse_config(BASE))
    other = parse_config(apply_params(BASE, {"strategy.eta": 0.5}))
    (folder / "config.json").write_text(other.model_dump_json(by_alias=True), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"config\.json is not the config of its state"):
        load_checkpoint(folder, other, MUTABLE)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"cannot read config\.json"):
        load_checkpoint(folder, other, MUTABLE)


def test_round_metrics_drop_missing_and_non_finite_values() -> None:
    metrics = round_metrics(RoundRecord(2, 4, 3, 1, 0.5, None, None, None, {"x": math.inf}), 7)
    assert metrics == {"round": 7.0, "seconds": 0.5, "succeeded": 3.0, "failed": 1.0}


DIGITS: dict[str, Any] = {
    "federation": {"rounds": 3, "seed": 0, "runtime": "local", "checkpoint_every": 1},
    "client": {
        "target": "redfl.examples.digits:DigitsClient",
        "num_clients": 4,
        "options": {"epochs": 1, "lr": 0.3},
    },
    "strategy": {"name": "fedadam", "eta": 0.02, "tau": 0.001, "fraction_fit": 0.5},
    "evaluation": {"central": "redfl.examples.digits:central_evaluation"},
}


def test_a_run_started_from_a_checkpoint_continues_it_bit_exact(tmp_path: Path) -> None:
    from redfl.core.server_state import load_state
    from redfl.run.api import run
    from redfl.run.checkpoints import checkpoint_path, latest_checkpoint

    straight = run(DIGITS, out=tmp_path / "straight")
    first = run(apply_params(DIGITS, {"federation.rounds": 2}), out=tmp_path / "first")
    donor = load_state(checkpoint_path(first.folder, 2))
    assert donor.strategy_state["m"]  # FedAdam's moments are in the state
    started = run(DIGITS, out=tmp_path / "started", start=donor)
    assert started.status == "succeeded", started.error
    assert started.result is not None and straight.result is not None
    assert [r.round for r in started.result.history] == [1, 2, 3]
    end, expected = (
        load_state(latest_checkpoint(r.folder) or r.folder) for r in (started, straight)
    )
    assert end.round == expected.round == 3
    for key in ("m", "v"):
        for name, array in expected.strategy_state[key].items():
            np.testing.assert_array_equal(end.strategy_state[key][name], array)
    for name, array in expected.parameters.items():
        np.testing.assert_array_equal(end.parameters[name], array)
    assert [r.loss for r in end.history] == [r.loss for r in expected.history]
    # The new folder holds the state it started from, made with its own config: resumable.
    assert load_state(checkpoint_path(started.folder, 2)).config_digest == end.config_digest
    lines = (started.folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3


def test_start_and_resume_together_are_refused(tmp_path: Path) -> None:
    from redfl.run.api import run

    given = state(parse_config(BASE))
    with pytest.raises(ConfigError, match=r"^start: a resumed run continues from its own"):
        run(BASE, resume=tmp_path, start=given)
