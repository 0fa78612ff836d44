"""``redfl.run``: the run folder, the event stream, cancellation, checks before the folder."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from redfl import FederatedNode, GraphFederation, virtual_nodes
from redfl.core.config import ConfigError
from redfl.core.events import Event, FailureRecorded, RoundFinished, event_from_json
from redfl.core.result import FederationError
from redfl.run.api import run
from redfl.run.folder import load_parameters
from redfl.run.recorder import read_events
from redfl.schemas.callbacks import Callback
from redfl.topology import builders

REPO = Path(__file__).resolve().parents[1]


def digits_config(rounds: int = 3, **strategy: Any) -> dict[str, Any]:
    """The demo's tables on the local runtime with 10 IID clients."""
    return {
        "federation": {"name": "t", "rounds": rounds, "seed": 0, "runtime": "local"},
        "client": {
            "target": "redfl.examples.digits:DigitsClient",
            "num_clients": 10,
            "options": {"partition": "iid", "lr": 0.3, "epochs": 1, "batch_size": 8},
        },
        "strategy": {"name": "fedavg", "min_fit_clients": 5, **strategy},
        "evaluation": {"central": "redfl.examples.digits:central_evaluation"},
    }


class Collect(Callback):
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> bool | None:
        self.events.append(event)
        return None


def test_run_writes_the_folder_and_one_event_stream(tmp_path: Path) -> None:
    collect = Collect()
    outcome = run(digits_config(3), out=tmp_path / "run", callbacks=[collect])
    folder = tmp_path / "run"
    assert outcome.status == "succeeded" and outcome.folder == folder
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "events.jsonl", "metrics.jsonl", "failures.jsonl"} <= names
    assert {"summary.json", "model.safetensors"} <= names
    types = [e.type for e in collect.events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("round_started") == 3 and types.count("round_finished") == 3
    assert "clients_progress" in types
    # events.jsonl holds the same stream, numbered, and every line parses back.
    written = read_events(folder)
    assert [e["seq"] for e in written] == list(range(1, len(written) + 1))
    assert [event_from_json(e) for e in written] == collect.events
    metrics = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2, 3]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["error"] is None
    # seconds_per_round is the mean of the per-round seconds the lines show.
    mean = sum(m["seconds"] for m in metrics) / 3
    assert summary["seconds_per_round"] == pytest.approx(mean, abs=1e-4)
    assert summary["wall_seconds"] >= sum(m["seconds"] for m in metrics)
    parameters, meta = load_parameters(folder / "model.safetensors")
    assert outcome.result is not None and outcome.result.parameters is not None
    final = outcome.result.parameters
    assert parameters.keys() == final.keys()
    assert all(np.array_equal(parameters[k], final[k]) for k in final)
    assert meta["rounds"] == 3 and "wall_seconds" not in meta


def test_the_same_config_gives_the_same_model_bytes_and_metrics(tmp_path: Path) -> None:
    run(digits_config(2), out=tmp_path / "a")
    run(digits_config(2), out=tmp_path / "b")
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()

    def untimed(folder: Path) -> list[dict[str, Any]]:
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert untimed(a) == untimed(b)


class CancelAt(Callback):
    def __init__(self, cancel: threading.Event, at: int) -> None:
        self.cancel, self.at = cancel, at

    def on_event(self, event: Event) -> bool | None:
        if isinstance(event, RoundFinished) and event.record.round == self.at:
            self.cancel.set()
        return None


def test_cancel_stops_at_the_round_boundary_and_keeps_the_model(tmp_path: Path) -> None:
    cancel = threading.Event()
    outcome = run(
        digits_config(6), out=tmp_path / "run", callbacks=[CancelAt(cancel, 2)], cancel=cancel
    )
    assert outcome.status == "cancelled"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "cancelled" and summary["rounds"] == 2
    assert summary["rounds_planned"] == 6
    _, meta = load_parameters(tmp_path / "run" / "model.safetensors")
    assert meta["rounds"] == 2
    assert read_events(tmp_path / "run")[-1]["type"] == "run_cancelled"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c["client"].update(target="no_such_module:Client"), "client.target"),
        (lambda c: c["strategy"].update(name="fedadam", eta=-1.0), "eta"),
        (lambda c: c["client"]["options"].update(lr=-1.0), "client.options.lr"),
        (lambda c: c["client"].update(roles="eval"), "min_fit_clients"),
    ],
)
def test_config_errors_leave_no_folder(tmp_path: Path, change: Any, field: str) -> None:
    config = digits_config(2)
    change(config)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        run(config, runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def gossip_config(tmp_path: Path, **topology: Any) -> dict[str, Any]:
    return {
        "federation": {"name": "g", "rounds": 2, "runtime": "local"},
        "client": {"target": "redfl.nodes:GossipNode", "num_clients": 4, "options": {"size": 3}},
        "topology": {"schema": "ring", "algorithm": "gossip", **topology},
    }


def test_node_options_and_topology_files_are_checked_before_the_folder(tmp_path: Path) -> None:
    bad_size = gossip_config(tmp_path)
    bad_size["client"]["options"]["size"] = -3
    with pytest.raises(ConfigError, match=r"client\.options: GossipNode: size must be >= 1"):
        run(bad_size, runs_root=tmp_path / "runs")
    missing = gossip_config(tmp_path, schema="custom", topology_file=str(tmp_path / "none.csv"))
    with pytest.raises(ConfigError, match="topology"):
        run(missing, runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_raised_round_size_is_said_in_the_summary(tmp_path: Path) -> None:
    config = digits_config(1, name="krum", f=2, fraction_fit=0.5)
    config["strategy"].pop("min_fit_clients")
    outcome = run(config, out=tmp_path / "run")
    assert outcome.status == "succeeded"
    (note,) = outcome.summary["notes"]
    assert "7 of 10 clients" in note and "not the 5" in note
    assert read_events(tmp_path / "run")[0]["notes"] == [note]
    assert outcome.result is not None and outcome.result.history[0].sampled == 7


def test_decentralised_metric_names_mean_what_the_star_names_mean(tmp_path: Path) -> None:
    config = {
        "federation": {"name": "d", "rounds": 2, "runtime": "local"},
        "client": {
            "target": "redfl.examples.digits_decentralized:DigitsRingNode",
            "num_clients": 4,
            "options": {"partition": "iid"},
        },
        "topology": {"schema": "ring", "algorithm": "ring_sequential"},
    }
    outcome = run(config, out=tmp_path / "run")
    assert outcome.status == "succeeded", outcome.error
    record = outcome.result.history[-1]  # type: ignore[union-attr]
    assert "loss" not in record.metrics and "accuracy" not in record.metrics
    assert record.metrics["fit_loss"] == record.train_loss
    assert record.metrics["test_loss"] == record.loss


def test_cancel_stops_a_decentralised_run_at_a_round_boundary(tmp_path: Path) -> None:
    config = gossip_config(tmp_path)
    config["federation"]["rounds"] = 5000
    config["client"]["num_clients"] = 8
    cancel = threading.Event()
    outcome = run(config, out=tmp_path / "run", callbacks=[CancelAt(cancel, 3)], cancel=cancel)
    assert outcome.status == "cancelled", outcome.error
    done = outcome.summary["rounds"]
    assert 3 <= done < 5000
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in metrics] == list(range(1, done + 1))
    assert read_events(tmp_path / "run")[-1] == {
        **read_events(tmp_path / "run")[-1],
        "type": "run_cancelled",
        "rounds": done,
    }
    # Every node stopped after the same round: the models they published are all of it.
    _, meta = load_parameters(tmp_path / "run" / "model.safetensors")
    assert meta["rounds"] == done


class Hello(FederatedNode):
    def train(self) -> str:
        if self.node_id == "c":
            raise RuntimeError("radio off")
        self.send("hi", self.node_id)
        message = self.receive("hi", timeout=10)
        assert message is not None
        return str(message.body)


def test_graph_federations_emit_round_and_failure_events() -> None:
    ids = ["a", "b"]
    collect = Collect()
    fed = GraphFederation(virtual_nodes(Hello, ids), builders.mesh(ids), runtime="local")
    fed.callbacks = [collect]
    with fed:
        fed.train()
    assert [e.type for e in collect.events] == ["round_started", "round_finished"]
    failing = GraphFederation(
        virtual_nodes(Hello, ["a", "b", "c"]), builders.mesh(["a", "b", "c"]), runtime="local"
    )
    failing.callbacks = [collect]
    with failing, pytest.raises(FederationError, match="node 'c' failed"):
        failing.train()
    failure = collect.events[-1]
    assert isinstance(failure, FailureRecorded)
    assert failure.failure.node_id == "c" and "radio off" in failure.failure.reason


class _Slow(Callback):
    """Records the rounds it sees; lingers inside round 2's event (saying so)."""

    def __init__(self) -> None:
        self.rounds: list[int] = []
        self.inside = threading.Event()

    def on_event(self, event: Event) -> bool | None:
        if isinstance(event, RoundFinished):
            if event.record.round == 2:
                self.inside.set()
                threading.Event().wait(0.3)  # a stop asked now must wait for the others
            self.rounds.append(event.record.round)
        return None


class _Rounds(Callback):
    def __init__(self) -> None:
        self.rounds: list[int] = []

    def on_event(self, event: Event) -> bool | None:
        if isinstance(event, RoundFinished):
            self.rounds.append(event.record.round)
        return None


def test_a_stop_never_lands_between_the_callbacks_of_one_event(tmp_path: Path) -> None:
    from redfl.run.api import StopRequest

    stop, slow, after = StopRequest(), _Slow(), _Rounds()

    def ask() -> None:
        if slow.inside.wait(60):
            stop.stop("now")

    asker = threading.Thread(target=ask)
    asker.start()
    outcome = run(digits_config(50), out=tmp_path / "run", callbacks=[slow, after], stop=stop)
    asker.join()
    assert (outcome.status, outcome.error) == ("stopped", "now")
    assert slow.rounds == after.rounds == list(range(1, outcome.summary["rounds"] + 1))
    assert outcome.summary["rounds"] >= 2
    kinds = [e["type"] for e in read_events(tmp_path / "run")]
    assert kinds[-1] == "run_stopped" and kinds.count("round_finished") == len(after.rounds)
    stop.stop("after the end")  # ignored: the run is over
    assert stop.reason == "now"
