"""The sites runtime's pure parts, without a network: the wire format, how a site's reply is
checked and folded (as a worker checks a client's), the roster's sessions and leases, and the
[sites] table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from redfl import Client
from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters
from redfl.core.config import ConfigError
from redfl.core.events import SiteJoined, SiteLeft, SiteRound
from redfl.core.instructions import Instructions
from redfl.core.roles import Role
from redfl.run.build import attackers_from_config, federation_from_config
from redfl.run.config import load_config, parse_config
from redfl.run.digest import config_digest
from redfl.runtime.host import Host
from redfl.runtime.sites.jobs import FIT_SLACK_BYTES, EvaluateJob, FitJob
from redfl.runtime.sites.roster import Roster, RunInfo, SiteBusy
from redfl.runtime.sites.wire import (
    Broadcast,
    EvaluateReply,
    FitReply,
    Task,
    WireError,
    arrays_blob,
    frame,
    read_reply,
    read_task,
    reply_frame,
    task_frame,
)
from redfl.runtime.star_runner import EvaluateClients, FitSegments
from redfl.runtime.topology_manager import TopologyManager
from redfl.schemas.base import virtual_nodes
from redfl.schemas.star import StarFederation

W = {"w": np.linspace(-1, 1, 6, dtype=np.float32)}


# -- the wire ----------------------------------------------------------------------------
def test_a_task_travels_bit_exact_with_its_instructions_and_arrives_read_only() -> None:
    parameters: Parameters = {
        "w": np.array([0.1, np.float32(1) / 3, -0.0], np.float32),
        "n": np.arange(3),
    }
    extra = {"lr": 0.1 + 0.2, "far": float("inf"), "ids": [1, "a", None], "deep": {"x": 2}}
    instructions = Instructions(4, "fit", 0.5, None, 3, extra)
    task = read_task(b"".join(task_frame(Task("fit", "j", "a", instructions, parameters))))
    assert task.instructions == instructions and task.instructions["far"] == float("inf")
    for name, array in parameters.items():
        assert task.parameters[name].tobytes() == array.tobytes()
        assert task.parameters[name].dtype == array.dtype
        assert not task.parameters[name].flags.writeable


def test_an_instruction_that_is_not_json_does_not_travel() -> None:
    instructions = Instructions.make(1, {"mask": np.ones(2)})
    with pytest.raises(WireError, match=r"instructions.extra.mask is a ndarray"):
        task_frame(Task("fit", "j", "a", instructions, W))


def test_a_round_encodes_its_parameters_once_for_every_site() -> None:
    shared = Broadcast(W)
    one = task_frame(Task("fit", "j1", "a", Instructions.make(1), W), shared)
    two = task_frame(Task("fit", "j2", "b", Instructions.make(1), W), shared)
    assert one[2] is two[2] is shared.blob


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x01\x02", "at least 8 bytes"),
        ((99).to_bytes(8, "little") + b"{}", "does not fit the frame"),
        ((2**40).to_bytes(8, "little") + b"{}", "does not fit the frame"),
        ((3).to_bytes(8, "little") + b"{x}", "not JSON"),
        ((2).to_bytes(8, "little") + b"[]", "JSON list, not an object"),
        ((2).to_bytes(8, "little") + b"{}" + b"garbage", "not safetensors"),
    ],
)
def test_malformed_frames_are_refused_with_the_reason(body: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        read_reply(body)


def test_arrays_of_other_dtypes_do_not_go_on_the_wire() -> None:
    with pytest.raises(WireError, match="array 's' has dtype <U1"):
        arrays_blob({"s": np.array(["x"])})


def _reply(header: dict[str, Any], arrays: Parameters | None = None) -> bytes:
    return b"".join(frame({"v": 1, **header}, arrays_blob(arrays or {})))


@pytest.mark.parametrize(
    ("header", "arrays", "message"),
    [
        ({"kind": "fit", "job": "j", "ok": True, "num_examples": 3, "x": 1}, W, "x: unknown key"),
        ({"kind": "fit", "job": "j", "ok": True, "num_examples": True}, W, "num_examples"),
        ({"kind": "fit", "job": "j", "ok": True}, W, "a success has num_examples"),
        ({"kind": "fit", "job": "j", "ok": False, "reason": "r"}, W, "a failure has a reason"),
        ({"kind": "fit", "job": "j", "ok": False}, None, "a failure has a reason"),
        ({"kind": "fit", "job": "j", "ok": True, "num_examples": 1, "loss": 1.0}, W, "no loss"),
        ({"kind": "evaluate", "job": "j", "ok": True, "num_examples": 1}, None, "has a loss"),
        ({"kind": "sum", "job": "j", "ok": True}, None, "kind"),
        (
            {"kind": "fit", "job": "j", "ok": True, "num_examples": 1, "metrics": {"a": "b"}},
            W,
            "metrics.a",
        ),
    ],
)
def test_a_reply_is_validated_strictly(
    header: dict[str, Any], arrays: Parameters | None, message: str
) -> None:
    with pytest.raises(WireError, match=message):
        read_reply(_reply(header, arrays))


def test_an_evaluate_reply_travels() -> None:
    reply = read_reply(reply_frame(EvaluateReply("j", True, 0.25, 7, {"accuracy": 0.5})))
    assert reply == EvaluateReply("j", True, 0.25, 7, {"accuracy": 0.5})


# -- a site's reply is checked and folded as a worker checks and folds a client's ----------
class Returns(Client):
    """Returns whatever ``answer`` says (the simulated twin of a site's reply)."""

    def __init__(self, answer: str = "ok") -> None:
        self.answer = answer

    def fit(self, parameters: Parameters, config: Instructions) -> Any:
        return _answers(parameters)[self.answer]

    def evaluate(self, parameters: Parameters, config: Instructions) -> Any:
        loss = float("nan") if self.answer == "nan" else 0.5
        return loss, 4, {"accuracy": 0.75}


def _answers(parameters: Parameters) -> dict[str, tuple[Parameters, Any, dict[str, float]]]:
    w = parameters["w"]
    return {
        "ok": ({"w": w + np.float32(0.25)}, 7, {"loss": 0.5}),
        "nan": ({"w": np.full_like(w, np.nan)}, 7, {}),
        "shape": ({"w": np.zeros(3, np.float32)}, 7, {}),
        "dtype": ({"w": w.astype(np.float64)}, 7, {}),
        "examples": ({"w": w}, 0, {}),
        "names": ({"v": w}, 7, {}),
    }


def _simulated(answer: str, policy: UpdatePolicy, fold: bool) -> Any:
    nodes = virtual_nodes(Returns, ["a"], options={"answer": answer})
    worker = Host(0, "fed", 0, 1, nodes, TopologyManager(None, {"a": 0}))
    return worker.handle(FitSegments(W, [["a"]], Instructions.make(2), fold, policy))


@pytest.mark.parametrize("answer", ["ok", "nan", "shape", "dtype", "examples", "names"])
@pytest.mark.parametrize("fold", [True, False])
def test_a_sites_reply_gives_the_batch_a_simulated_worker_gives(answer: str, fold: bool) -> None:
    policy = UpdatePolicy(clip_norm=0.1, per_client={"a": {"lr": 2}})
    request = FitSegments(W, [["a"]], Instructions.make(2), fold, policy)
    job = FitJob("j", 0, request, Broadcast(W), Instructions.make(2), "a")
    update, count, metrics = _answers(W)[answer]
    assert job.answer(reply_frame(FitReply("j", True, update, count, metrics)))
    site, simulated = job.future.result(), _simulated(answer, policy, fold)
    assert [(f.node_id, f.round, f.reason) for f in site.failures] == [
        (f.node_id, f.round, f.reason) for f in simulated.failures
    ]
    assert site.succeeded == simulated.succeeded and site.stats == simulated.stats
    if simulated.total is not None and simulated.total.count:
        assert site.total is not None
        assert site.total.sums["w"].tobytes() == simulated.total.sums["w"].tobytes()
        assert site.total.weight == simulated.total.weight
    assert [u.parameters["w"].tobytes() for u in site.updates] == [
        u.parameters["w"].tobytes() for u in simulated.updates
    ]


def test_a_nan_update_fails_with_the_simulated_reason() -> None:
    request = FitSegments(W, [["a"]], Instructions.make(2), True)
    job = FitJob("j", 0, request, Broadcast(W), Instructions.make(2), "a")
    nan = {"w": np.full(6, np.nan, np.float32)}
    job.answer(reply_frame(FitReply("j", True, nan, 3)))
    assert [f.reason for f in job.future.result().failures] == [
        "parameter 'w' contains NaN or infinity"
    ]


def test_a_malformed_reply_or_one_for_another_job_fails_the_sites_client() -> None:
    request = FitSegments(W, [["a"]], Instructions.make(2), True)
    job = FitJob("j", 0, request, Broadcast(W), Instructions.make(2), "a")
    assert not job.answer(b"short")
    assert job.future.result().failures[0].reason == (
        "the site sent a malformed reply: a frame has at least 8 bytes, got 5"
    )
    other = FitJob("k", 0, request, Broadcast(W), Instructions.make(2), "a")
    assert not other.answer(reply_frame(FitReply("j", True, W, 3)))
    assert "does not answer the fit job 'k'" in other.future.result().failures[0].reason


def test_an_evaluate_reply_with_a_nan_loss_fails_as_simulated() -> None:
    job = EvaluateJob("j", 0, Broadcast(W), Instructions.make(2, phase="evaluate"), "a")
    job.answer(reply_frame(EvaluateReply("j", True, float("nan"), 4)))
    nodes = virtual_nodes(Returns, ["a"], options={"answer": "nan"})
    worker = Host(0, "fed", 0, 1, nodes, TopologyManager(None, {"a": 0}))
    simulated = worker.handle(EvaluateClients(W, ["a"], Instructions.make(2, phase="evaluate")))
    assert job.future.result().failures == simulated.failures
    assert simulated.failures[0].reason == "ValueError: evaluation loss is NaN"


def test_a_fit_reply_may_be_twice_the_models_size_and_a_megabyte() -> None:
    big = {"w": np.zeros(1000, np.float64)}
    request = FitSegments(big, [["a"]], Instructions.make(1), True)
    job = FitJob("j", 0, request, Broadcast(big), Instructions.make(1), "a")
    assert job.limit == 2 * 8000 + FIT_SLACK_BYTES


# -- the roster --------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def roster(clock: Clock) -> Roster:
    sites: list[tuple[str, tuple[Role, ...]]] = [("a", ("eval", "train")), ("b", ("train",))]
    return Roster(sites, RunInfo("run-1", 7, 2, 15.0), clock=clock, closed_grace=2, idle_grace=5)


def fit_job(job_id: str, worker: int, node: str) -> FitJob:
    request = FitSegments(W, [[node]], Instructions.make(3), True)
    return FitJob(job_id, worker, request, Broadcast(W), Instructions.make(3), node)


def test_a_join_tells_the_site_its_clients_place() -> None:
    sites = roster(Clock())
    session, welcome = sites.join("b", "10.0.0.2:5000")
    assert (welcome.node_id, welcome.index, welcome.num_nodes, welcome.seed) == ("b", 1, 2, 7)
    assert welcome.run == "run-1" and welcome.roles == ("train",)
    assert sites.find("b", welcome.session) is session and sites.find("b", "forged") is None
    assert sites.find("a", welcome.session) is None
    assert sites.missing() == ["a"]
    assert sites.events() == [SiteJoined("b", "10.0.0.2:5000")]


def test_a_second_connection_replaces_a_site_only_once_the_first_is_gone() -> None:
    clock = Clock()
    sites = roster(clock)
    first, _ = sites.join("a", "10.0.0.1:1")
    sites.poll_begin(first)
    with pytest.raises(SiteBusy, match=r"site 'a' is connected already \(from 10.0.0.1:1"):
        sites.join("a", "10.0.0.9:9")
    sites.poll_end(first, closed=False)  # between two polls: still alive
    clock.now += 4
    with pytest.raises(SiteBusy):
        sites.join("a", "10.0.0.9:9")
    sites.submit(job := fit_job("j1", 0, "a"))
    sites.poll_begin(first)
    sites.poll_end(first, closed=True)  # its connection closed: gone, replaced at once
    second, _ = sites.join("a", "10.0.0.9:9")
    assert second is not first and first.ended is not None
    assert job.future.result().failures[0].reason == (
        "site 'a' left: replaced by a new connection of the same site"
    )
    assert [type(e) for e in sites.events()] == [SiteJoined, SiteLeft, SiteJoined]


@pytest.mark.parametrize(
    ("closed", "after", "reason"),
    [(True, 2.5, "its connection closed"), (False, 5.5, "no poll for 5 s")],
)
def test_a_session_ends_when_its_lease_runs_out(closed: bool, after: float, reason: str) -> None:
    clock = Clock()
    sites = roster(clock)
    session, _ = sites.join("a", "x")
    sites.submit(job := fit_job("j1", 0, "a"))
    sites.poll_begin(session)
    clock.now += 60  # an open poll keeps the session, however long
    sites.expire()
    assert session.ended is None
    sites.poll_end(session, closed)
    clock.now += after - 0.6
    sites.expire()
    assert session.ended is None
    clock.now += 0.6
    sites.expire()
    assert session.ended == reason and sites.missing() == ["a", "b"]
    state = sites.states()[0]
    assert (state.connected, state.left, state.address) == (False, reason, "x")
    assert state.last_seen is not None and sites.states()[1].last_seen is None
    assert job.future.result().failures[0].reason == f"site 'a' left: {reason}"
    assert sites.events()[-1] == SiteLeft("a", reason)


def test_a_closed_connection_between_two_polls_ends_the_session_and_frees_the_name() -> None:
    clock = Clock()
    sites = roster(clock)
    session, _ = sites.join("a", "x")
    sites.poll_begin(session)
    sites.poll_end(session, closed=False)  # a task went out; the site died before polling
    sites.connection_closed(session)
    second, _ = sites.join("a", "y")  # its restart is let in at once
    assert session.ended == "replaced by a new connection of the same site"
    sites.poll_begin(second)
    sites.connection_closed(second)  # with a poll open, the poll itself says it closed
    clock.now += 10
    sites.expire()
    assert second.ended is None


def test_work_for_an_absent_site_fails_at_once_and_is_counted() -> None:
    sites = roster(Clock())
    sites.submit(job := fit_job("j1", 1, "b"))
    assert job.future.result().failures[0].reason == "site 'b' is not connected"
    assert sites.states()[1].failures == 1 and not sites.states()[1].connected


def test_jobs_are_delivered_again_until_answered_and_counted_once() -> None:
    clock = Clock()
    sites = roster(clock)
    session, _ = sites.join("a", "x")
    sites.submit(first := fit_job("j1", 0, "a"))
    sites.submit(fit_job("j2", 0, "a"))
    assert sites.next_job(session, set()) is first
    assert sites.next_job(session, {"j1"}).id == "j2"  # type: ignore[union-attr]
    clock.now += 1.5
    assert sites.probe(0) == (session.number, "a", 1.5)
    taken = sites.take(session, "j1")
    assert taken is first and sites.take(session, "j1") is None
    first.answer(reply_frame(FitReply("j1", True, W, 2)))
    sites.settled(session, first)
    sites.abandon(0, "it ran past its timeout")
    assert sites.peek(session, "j2") is None
    assert sites.events()[1:] == [SiteRound("a", 3)]
    state = sites.states()[0]
    assert (state.rounds, state.failures, state.connected) == (1, 1, True)


def test_after_the_run_no_site_joins_and_work_fails() -> None:
    sites = roster(Clock())
    sites.join("a", "x")
    sites.finish()
    with pytest.raises(Exception, match="the run has ended"):
        sites.join("b", "y")
    sites.submit(job := fit_job("j", 0, "a"))
    assert job.future.result().failures[0].reason == "site 'a' is not connected"


# -- the [sites] table -------------------------------------------------------------------
def sites_config(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "federation": {"runtime": "local", "rounds": 1},
        "client": {"target": "redfl.examples.echo:EchoClient", "num_clients": 3},
        "sites": {"expected": ["hospital-a", "hospital-b", "clinic-c"]},
    }
    for table, values in changes.items():
        base[table] = {**base.get(table, {}), **values} if values is not None else None
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"client": {"num_clients": 4}}, "client.num_clients (4) must equal the number of"),
        ({"resources": {"num_workers": 2}}, "resources: 2 workers for 3 sites"),
        ({"federation": {"runtime": "sites"}}, "runtime 'sites' needs a [sites] table with home"),
        ({"federation": {"runtime": "sites"}, "sites": None}, "runtime 'sites' needs a [sites]"),
        ({"sites": {"expected": ["a", "a", "b"]}}, "sites.expected: site names must be unique"),
        ({"sites": {"expected": ["a", "b c", "d"]}}, "invalid member name 'b c'"),
        ({"sites": {"listen": "0.0.0.0"}}, "sites.listen: must be host:port"),
        ({"sites": {"listen": "h:70000"}}, "sites.listen: must be host:port"),
        ({"sites": {"join_timeout": 0}}, "sites.join_timeout: Input should be greater than 0"),
    ],
)
def test_a_bad_sites_table_names_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(sites_config(**changes))


def test_secure_aggregation_at_sites_parses_and_still_refuses_rules_needing_every_update() -> None:
    at_sites = {"federation": {"runtime": "sites"}, "sites": {"home": "h"}}
    config = parse_config(sites_config(**at_sites, secure_aggregation={}))
    assert config.secure_aggregation is not None and config.federation.runtime == "sites"
    median = parse_config(
        sites_config(**at_sites, secure_aggregation={}, strategy={"name": "fedmedian"})
    )
    with pytest.raises(ValueError, match="the strategy FedMedian needs every client's update"):
        federation_from_config(median)


def test_the_sites_are_the_clients_node_ids_one_worker_each_in_every_runtime() -> None:
    config = parse_config(sites_config(resources={"worker": {"CPU": 0.5}}))
    federation = federation_from_config(config)
    assert isinstance(federation, StarFederation)
    assert federation.train_ids == ["hospital-a", "hospital-b", "clinic-c"]
    federation.train(1)
    assert [federation.worker_of(n) for n in federation.train_ids] == [0, 1, 2]
    federation.stop()
    attack = {"kind": "sign_flip", "malicious_fraction": 0.67}
    attacked = parse_config({**sites_config(), "attack": attack})
    chosen = attackers_from_config(attacked)
    assert len(chosen) == 2 and set(chosen) < {"hospital-a", "hospital-b", "clinic-c"}


def test_only_a_schema_of_star_clients_runs_at_sites() -> None:
    config = parse_config(sites_config(topology={"schema": "ring", "algorithm": "gossip"}))
    with pytest.raises(ConfigError, match="sites: the 'ring' schema cannot run its clients"):
        federation_from_config(config)


def test_where_the_server_listens_does_not_change_the_digest_but_the_sites_do() -> None:
    digest = config_digest(parse_config(sites_config()))
    moved = sites_config(sites={"home": "/elsewhere", "listen": "0.0.0.0:9", "join_timeout": 5})
    assert config_digest(parse_config(moved)) == digest
    renamed = sites_config(sites={"expected": ["x", "y", "z"]})
    assert config_digest(parse_config(renamed)) != digest


def test_a_relative_home_is_read_from_the_config_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    body = sites_config(sites={"home": "fed-home"})
    toml = "\n".join(
        f"[{table}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
        for table, values in body.items()
    )
    (folder / "run.toml").write_text(toml)
    assert load_config(folder / "run.toml").sites.home == str(folder / "fed-home")  # type: ignore[union-attr]
