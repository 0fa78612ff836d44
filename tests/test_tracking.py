"""Experiment tracking, read back with each tool's own reader: a digits run (in-process) is
logged to MLflow (its file store, read with ``MlflowClient``), TensorBoard (event files, read
with TensorBoard's ``EventAccumulator``) and W&B offline (its run file, decoded into W&B's own
protobuf records): every round's metrics, the config as parameters, the model as an
artifact, the final status."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from platform_app import app_fixture, bearer, client_fixture  # noqa: F401  (fixtures)

from redfl.core.config import ConfigError
from redfl.run import tracking
from redfl.run.api import run
from redfl.run.config import parse_config
from redfl.run.digest import config_digest

CONFIG: dict[str, Any] = {
    "federation": {"name": "tracked", "rounds": 3, "runtime": "local"},
    "client": {
        "target": "redfl.examples.digits:DigitsClient",
        "num_clients": 4,
        "options": {"lr": 0.3, "epochs": 1},
    },
    "evaluation": {"central": "redfl.examples.digits:central_evaluation"},
}


def _records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run folder (``runs/tracked``) logged by all three trackers."""
    folder = tmp_path_factory.mktemp("tracking") / "runs" / "tracked"
    config = {**CONFIG, "tracking": {"mlflow": {}, "tensorboard": {}, "wandb": {}}}
    outcome = run(config, out=folder)
    assert outcome.status == "succeeded"
    return folder


def test_mlflow_has_the_params_every_round_and_the_model(tracked: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tracked.parent / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    (found,) = client.search_runs([experiment.experiment_id])
    assert (found.info.run_name, found.info.status) == ("tracked", "FINISHED")
    params = found.data.params
    assert (params["client.options.lr"], params["strategy.name"]) == ("0.3", "fedavg")
    assert params["federation.rounds"] == "3" and params["tracking.mlflow.experiment"] == "null"
    history = client.get_metric_history(found.info.run_id, "accuracy")
    records = _records(tracked)
    assert [(m.step, m.value) for m in history] == [(r["round"], r["accuracy"]) for r in records]
    assert len(client.get_metric_history(found.info.run_id, "train_loss")) == 3
    names = sorted(a.path for a in client.list_artifacts(found.info.run_id))
    assert names == ["model.safetensors", "summary.json"]
    copy = client.download_artifacts(found.info.run_id, "model.safetensors", str(tracked.parent))
    assert Path(copy).read_bytes() == (tracked / "model.safetensors").read_bytes()


def test_tensorboard_has_every_round_and_the_config(tracked: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(tracked / "tensorboard"))
    events.Reload()
    records = _records(tracked)
    accuracy = [(e.step, e.value) for e in events.Scalars("accuracy")]
    assert accuracy == [(r["round"], pytest.approx(r["accuracy"], rel=1e-6)) for r in records]
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["client.options.lr"].number_value == 0.3
    assert hparams["strategy.name"].string_value == "fedavg"
    assert {"config", "summary"} <= set(events.Tags()["tensors"])


def _wandb_records(path: Path) -> list[Any]:
    """The records of a W&B run file: a LevelDB-style log (7-byte file header, 32 KiB
    blocks, each piece with a 7-byte header: checksum, length, kind) of W&B ``Record``
    protobufs."""
    from wandb.proto import wandb_internal_pb2

    blob, block, header = path.read_bytes(), 32 * 1024, 7
    assert blob[:4] == b":W&B"
    records, pending, at = [], b"", header
    while at + header <= len(blob):
        if block - at % block < header:  # the block's tail is padding
            at += block - at % block
            continue
        _, length, kind = struct.unpack("<IHB", blob[at : at + header])
        piece = blob[at + header : at + header + length]
        at += header + length
        if kind == 0 and length == 0:
            continue
        pending += piece
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_has_the_config_every_round_and_the_model(tracked: Path) -> None:
    (run_file,) = (tracked / "wandb").glob("offline-run-*/run-*.wandb")
    records = _wandb_records(run_file)
    kinds = [r.WhichOneof("record_type") for r in records]
    (started,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in started.config.update}
    assert config["client.options.lr"] == 0.3 and config["federation.rounds"] == 3
    rows = [
        {
            item.key or ".".join(item.nested_key): json.loads(item.value_json)
            for item in r.history.item
        }
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    expected = _records(tracked)
    assert [(row["_step"], row["accuracy"]) for row in rows] == [
        (r["round"], pytest.approx(r["accuracy"])) for r in expected
    ]
    (artifact,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert (artifact.name, artifact.type) == ("model-tracked", "model")
    assert sorted(entry.path for entry in artifact.manifest.contents) == [
        "model.safetensors",
        "summary.json",
    ]
    assert "exit" in kinds


def test_a_tracker_that_fails_leaves_the_run_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the event folder should go")
    config = {**CONFIG, "tracking": {"tensorboard": {"log_dir": str(blocked / "sub")}}}
    with caplog.at_level(logging.WARNING, logger="redfl.tracking"):
        outcome = run(config, out=tmp_path / "run")
    assert outcome.status == "succeeded" and outcome.summary["rounds"] == 3
    assert "tensorboard tracking not started" in caplog.text


def test_a_missing_package_is_a_config_error_before_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(tracking.PACKAGES, "wandb", "no_such_tracking_package")
    config = {**CONFIG, "tracking": {"wandb": {}}}
    with pytest.raises(ConfigError, match=r"tracking\.wandb: needs the package"):
        run(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_stopped_run_ends_killed_in_mlflow(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from redfl.run.api import StopRequest
    from redfl.schemas.callbacks import Callback

    stop = StopRequest()

    class StopAfterTwo(Callback):
        def on_round_end(self, record: Any) -> None:
            if record.round == 2:
                stop.stop("enough")

    config = {**CONFIG, "federation": {**CONFIG["federation"], "rounds": 50}}
    config["tracking"] = {"mlflow": {"experiment": "stops"}}
    outcome = run(config, out=tmp_path / "runs" / "r", callbacks=[StopAfterTwo()], stop=stop)
    assert (outcome.status, outcome.summary["rounds"]) == ("stopped", 2)
    client = MlflowClient(tracking_uri=(tmp_path / "runs" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("stops")
    assert experiment is not None
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "KILLED"
    assert len(client.get_metric_history(found.info.run_id, "accuracy")) == 2


def test_tracking_does_not_change_the_digest() -> None:
    plain = parse_config(CONFIG)
    tracked = parse_config({**CONFIG, "tracking": {"mlflow": {"experiment": "x"}}})
    assert config_digest(plain) == config_digest(tracked)


def test_web_configs_may_track_but_not_name_server_paths(app: FastAPI, client: TestClient) -> None:
    base = '[client]\ntarget = "redfl.examples.echo:EchoClient"\nnum_clients = 2\n'
    rita = bearer(app, "rita")
    ok = client.post("/api/runs", json={"config": base + "[tracking.tensorboard]\n"}, headers=rita)
    assert ok.status_code == 201
    for table, key in (("mlflow", "tracking_uri"), ("tensorboard", "log_dir"), ("wandb", "dir")):
        config = base + f'[tracking.{table}]\n{key} = "/etc"\n'
        refused = client.post("/api/runs", json={"config": config}, headers=rita)
        assert (refused.status_code, refused.json()["field"]) == (422, f"tracking.{table}.{key}")
