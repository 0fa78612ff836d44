"""A trial's reports to Tune (no Ray): metrics per round, checkpoints, restored numbering."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from redfl.core.config import ConfigError
from redfl.core.events import CheckpointSaved, RoundFinished, RoundStarted
from redfl.core.result import RoundRecord
from redfl.run.tune_report import TuneReporter, load_checkpoint, round_metrics


class Collected:
    """A report function that keeps what it was given (and each checkpoint's files)."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.checkpoints: list[dict[str, bytes] | None] = []
        self.restored: list[tuple[int, dict[str, np.ndarray]]] = []

    def __call__(self, metrics: Mapping[str, float], writer: object) -> None:
        self.metrics.append(dict(metrics))
        if writer is None:
            self.checkpoints.append(None)
            return
        with tempfile.TemporaryDirectory() as folder:
            writer(Path(folder))  # type: ignore[operator]
            files = {p.name: p.read_bytes() for p in Path(folder).iterdir()}
            self.checkpoints.append(files)
            if "model.safetensors" in files:
                self.restored.append(load_checkpoint(Path(folder)))


def record(rnd: int, accuracy: float | None = 0.5, loss: float = 1.0) -> RoundRecord:
    return RoundRecord(rnd, 4, 4, 0, 0.1, 2.0, loss, accuracy, {"fit_loss": 2.0, "x": math.nan})


def test_each_round_reports_its_metrics_with_the_global_parameters() -> None:
    collected = Collected()
    reporter = TuneReporter(collected, "accuracy", done=2)  # restored after round 2
    w = np.arange(3, dtype=np.float32)
    reporter.on_event(RoundStarted(1, 4))
    reporter.on_aggregate(1, {"w": w})
    reporter.on_event(RoundFinished(record(1, accuracy=0.75)))
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
    [(rnd, parameters)] = collected.restored
    assert rnd == 3
    np.testing.assert_array_equal(parameters["w"], w)


def test_a_round_without_parameters_reports_without_a_checkpoint() -> None:
    collected = Collected()
    TuneReporter(collected, "loss").on_event(RoundFinished(record(1)))
    assert collected.checkpoints == [None]


def test_a_metric_the_record_lacks_is_named_with_what_it_has() -> None:
    reporter = TuneReporter(Collected(), "accuracy")
    with pytest.raises(ConfigError, match=r"metric: 'accuracy' is not in round 1's record"):
        reporter.on_event(RoundFinished(record(1, accuracy=None)))


def test_with_state_checkpoints_the_saved_folder_is_the_checkpoint(tmp_path: Path) -> None:
    saved = tmp_path / "round-000001"
    saved.mkdir()
    (saved / "state.json").write_text("{}", encoding="utf-8")
    collected = Collected()
    reporter = TuneReporter(collected, "accuracy", state_checkpoints=True)
    reporter.on_aggregate(1, {"w": np.zeros(2, np.float32)})
    reporter.on_event(RoundFinished(record(1)))
    assert collected.metrics == []  # waits for the state the run saves next
    reporter.on_event(CheckpointSaved(1, str(saved)))
    assert [m["round"] for m in collected.metrics] == [1.0]
    assert collected.checkpoints == [{"state.json": b"{}"}]
    reporter.on_event(CheckpointSaved(1, str(saved)))  # a second save of the round: no report
    assert len(collected.metrics) == 1


def test_round_metrics_drop_missing_and_non_finite_values() -> None:
    metrics = round_metrics(RoundRecord(2, 4, 3, 1, 0.5, None, None, None, {"x": math.inf}), 7)
    assert metrics == {"round": 7.0, "seconds": 0.5, "succeeded": 3.0, "failed": 1.0}
