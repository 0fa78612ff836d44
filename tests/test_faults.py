"""Faults on real Ray: a worker killed mid-round, a hung client, the restart limit, health."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fault_clients import (
    HangClient,
    KillOnceClient,
    KillOnceDSGD,
    NoisyClient,
    StatefulKillOnceClient,
)

import redfl
from redfl import RingFederation, StarFederation
from redfl.core.config import ConfigError
from redfl.core.events import Event, RoundFinished, RoundStarted, WorkerRestarted
from redfl.core.result import FederationError
from redfl.examples.digits_decentralized import DigitsDSGDNode
from redfl.run.config import parse_config
from redfl.runtime.resources import ResourcesConfig
from redfl.schemas.callbacks import Callback
from redfl.schemas.rollback import SNAPSHOT_EVERY

TWO_WORKERS = ResourcesConfig(num_workers=2)


class Events(Callback):
    """Keeps every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> bool | None:
        self.events.append(event)
        return super().on_event(event)

    def restarts(self) -> list[WorkerRestarted]:
        return [e for e in self.events if isinstance(e, WorkerRestarted)]


def star(client: Any, options: dict[str, Any], **kw: Any) -> StarFederation:
    return StarFederation(
        client,
        100,
        initial_parameters=NoisyClient.initial_parameters(),
        options=options,
        seed=7,
        resources=TWO_WORKERS,
        **kw,
    )


def test_sigkilled_worker_is_restarted_and_the_result_is_bit_identical(
    ray_session: Any, tmp_path: Path
) -> None:
    with star(NoisyClient, {}) as plain:
        expected = plain.train(3)
    events = Events()
    options = {"marker": str(tmp_path / "killed"), "victim": "client-37", "when": 2}
    with star(KillOnceClient, options, callbacks=[events]) as fed:
        result = fed.train(3)
        health = fed.health()
        victim = fed.worker_of("client-37")
    assert (tmp_path / "killed").exists()
    assert result.failures == []
    assert result.parameters_equal(expected)
    assert len(events.restarts()) == 1, events.restarts()
    [restart] = events.restarts()
    assert restart.worker == victim
    assert restart.reason.startswith("round 2: its process died: killed"), restart.reason
    assert 0 < restart.seconds < 30
    assert [h.restarts for h in health] == [int(w == restart.worker) for w in range(2)]
    assert [h.state for h in health] == ["alive", "alive"]
    assert [h.nodes for h in health] == [50, 50]


def test_stateful_clients_rerun_on_their_restarted_worker_and_the_loss_is_recorded(
    ray_session: Any, tmp_path: Path
) -> None:
    events = Events()
    options = {"marker": str(tmp_path / "killed"), "victim": "client-2", "when": 2}
    fed = StarFederation(
        StatefulKillOnceClient,
        20,
        initial_parameters=NoisyClient.initial_parameters(),
        options=options,
        resources=TWO_WORKERS,
        callbacks=[events],
    )
    with fed:
        result = fed.train(3)
    assert result.failures == []
    [restart] = events.restarts()
    assert restart.worker == 0
    assert restart.reason.endswith("the state of its stateful clients was lost with its process")
    # worker 0's ten clients counted 1 fit in round 2 (state lost), 2 in round 3: mean 2.5
    assert [r.metrics["fit_fits"] for r in result.history] == [1.0, 1.5, 2.5]


def test_a_hung_client_times_out_and_the_round_ends_within_the_bound(
    ray_session: Any,
) -> None:
    events = Events()
    options = {"victim": "client-11", "when": 2, "seconds": 60.0}
    with star(HangClient, options, callbacks=[events], client_timeout=1.0) as fed:
        result = fed.train(3)
        health = fed.health()
    [failure] = result.failures
    assert (failure.node_id, failure.round, failure.reason) == (
        "client-11",
        2,
        "timeout after 1 s",
    )
    assert result.history[1].seconds < 1.0 + 1.5, [r.seconds for r in result.history]
    assert [r.succeeded for r in result.history] == [100, 99, 100]
    [restart] = events.restarts()
    assert "client client-11 timeout after 1 s" in restart.reason
    assert sum(h.restarts for h in health) == 1


def test_a_worker_lost_past_max_worker_restarts_fails_the_run(
    ray_session: Any, tmp_path: Path
) -> None:
    options = {"marker": str(tmp_path / "killed"), "victim": "client-4", "when": 1}
    with (
        star(KillOnceClient, options, max_worker_restarts=0) as fed,
        pytest.raises(FederationError) as error,
    ):
        fed.train(2)
    message = str(error.value)
    assert "worker 0 was lost 1 time(s)" in message
    assert "max_worker_restarts=0" in message
    assert "round 1: its process died: killed" in message


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("client_timeout", 0, "a number of seconds > 0"),
        ("round_timeout", -1.0, "a number of seconds > 0"),
        ("client_timeout", "2", "a number of seconds > 0"),
        ("max_worker_restarts", -1, "an int >= 0"),
        ("max_worker_restarts", 1.5, "an int >= 0"),
    ],
)
def test_bad_fault_settings_are_refused(name: str, value: Any, allowed: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be {allowed}.*got {value!r}"):
        star(NoisyClient, {}, runtime="local", **{name: value})


def test_a_round_timeout_fails_the_unfinished_clients(ray_session: Any) -> None:
    options = {"victim": "client-11", "when": 2, "seconds": 60.0}
    with star(HangClient, options, round_timeout=1.5) as fed:
        result = fed.train(2)
    second = result.history[1]
    assert second.seconds < 1.5 + 1.0, second.seconds
    assert {f.reason for f in result.failures} == {"round timeout after 1.5 s"}
    failed = {f.node_id for f in result.failures}
    assert "client-11" in failed and second.failed == len(failed) < 50
    assert second.succeeded == 100 - len(failed)


def test_restarts_reach_events_jsonl_through_the_run_api(ray_session: Any, tmp_path: Path) -> None:
    config = {
        "federation": {"rounds": 2, "max_worker_restarts": 1, "client_timeout": 30},
        "client": {
            "target": "fault_clients:KillOnceClient",
            "num_clients": 20,
            "options": {"marker": str(tmp_path / "killed"), "victim": "client-3", "when": 2},
        },
        "resources": {"num_workers": 2},
    }
    outcome = redfl.run(config, out=tmp_path / "run")
    assert outcome.status == "succeeded", outcome.error
    lines = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").open()]
    [restart] = [line for line in lines if line["type"] == "worker_restarted"]
    assert restart["worker"] == 1 and restart["reason"].startswith("round 2: its process died")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("client_timeout", 0, "federation.client_timeout"),
        ("round_timeout", "soon", "federation.round_timeout"),
        ("max_worker_restarts", -2, "federation.max_worker_restarts"),
    ],
)
def test_bad_fault_settings_in_the_config_name_the_field(
    key: str, value: Any, message: str
) -> None:
    tables = {"federation": {key: value}, "client": {"target": "a:B", "num_clients": 2}}
    with pytest.raises(ConfigError, match=message):
        parse_config(tables)


def test_timeouts_are_refused_for_decentralised_schemas() -> None:
    tables = {
        "federation": {"round_timeout": 5, "runtime": "local"},
        "client": {
            "target": "redfl.examples.digits_decentralized:DigitsDSGDNode",
            "num_clients": 4,
        },
        "topology": {"schema": "ring", "algorithm": "dsgd"},
    }
    refusal = r"federation\.round_timeout: timeouts are for round-driven clients"
    with pytest.raises(ConfigError, match=refusal):
        redfl.run(tables)


def test_a_lost_worker_rolls_a_ring_back_to_its_snapshot_bit_identically(
    ray_session: Any, tmp_path: Path
) -> None:
    # Killed in round 7: back to the snapshot of round 5 (SNAPSHOT_EVERY), round 6 runs
    # again unannounced (its record kept), round 7 again, then 8.
    assert SNAPSHOT_EVERY == 5
    options = {"tile": 1, "epochs": 1, "timeout": 60.0}
    with RingFederation(DigitsDSGDNode, 8, options=options, resources=TWO_WORKERS) as plain:
        expected = plain.train(8)
    events = Events()
    killing = {"marker": str(tmp_path / "killed"), "victim": "node-5", "when": 7, "pause": 0.3}
    killing.update(options)
    with RingFederation(
        KillOnceDSGD, 8, options=killing, resources=TWO_WORKERS, callbacks=[events]
    ) as fed:
        result = fed.train(8)
        health = fed.health()
    assert (tmp_path / "killed").exists()
    assert expected.parameters is not None and result.parameters is not None
    for name in expected.parameters:
        assert np.array_equal(result.parameters[name], expected.parameters[name])
    assert [r.round for r in result.history] == list(range(1, 9))
    # round means sum node reports in arrival order: equal up to float rounding
    assert [r.accuracy for r in result.history] == pytest.approx(
        [r.accuracy for r in expected.history], rel=1e-12
    )
    [restart] = events.restarts()
    assert restart.reason.startswith("round 7: its process died"), restart.reason
    assert sum(h.restarts for h in health) == 1
    started = [e.round for e in events.events if isinstance(e, RoundStarted)]
    assert started == [1, 2, 3, 4, 5, 6, 7, 7, 8], started
    finished = [e.record.round for e in events.events if isinstance(e, RoundFinished)]
    assert finished == list(range(1, 9))  # round 6, run again, is not reported twice


def test_timeouts_are_refused_on_the_local_runtime() -> None:
    refusal = "client_timeout and round_timeout need a runtime that can interrupt clients"
    with pytest.raises(ValueError, match=refusal):
        star(NoisyClient, {}, runtime="local", client_timeout=5.0)
