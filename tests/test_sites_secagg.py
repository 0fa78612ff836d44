"""Secure aggregation at sites: real ``redfl site run`` processes over mutual TLS on
127.0.0.1. The same config gives the same model at sites as on Ray and in-process; a site
killed before or after masking, or that stops answering a stage, leaves the plain sum of the
inputs that arrived; distributed noise reaches the sum; what the server receives for a
site's update is masked and the server process makes no protocol client; losing more sites
than the threshold allows fails the round with the protocol's reason. Without site
processes: a site that joins again mid-round drops, the server checks answers against the
round's public parameters, and malformed frames are refused with the reason."""

from __future__ import annotations

import base64
import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sites_rig import (
    DIGITS,
    NAMES,
    Deployment,
    RawSite,
    SiteProcess,
    deploy,
    events,
    parameters,
    serve,
    start_sites,
    tls_context,
)
from waiting import wait_until

from redfl.core.events import Event, SecureAggregationStage
from redfl.core.instructions import Instructions
from redfl.privacy import secagg
from redfl.privacy.secagg import (
    EncryptedShare,
    KeyAdvertisement,
    NeighbourKeys,
    RoutedShares,
    SecAggConfig,
    SecureAggregationConfig,
    ShareBundle,
    UnmaskReply,
    UnmaskRequest,
    layout_of,
)
from redfl.privacy.secagg.shamir import Share
from redfl.run.api import RunOutcome, run
from redfl.runtime.secagg_runner import MaskInputs, SecureFit, ShareKeys, Unmask
from redfl.runtime.sites import jobs
from redfl.runtime.sites.backend import SitesBackend
from redfl.runtime.sites.secure_jobs import StageJob
from redfl.runtime.sites.secure_wire import (
    SecureFitReply,
    SecureFitTask,
    StageResponse,
    StageTask,
    read_secure_reply,
    read_secure_task,
    secure_reply_frame,
    stage_task_frame,
)
from redfl.runtime.sites.wire import WireError, arrays_blob, frame, read_frame
from redfl.schemas.callbacks import Callback
from redfl.trust import TrustHome

JITTER = "site_clients:RecordingJitter"
SIZE = 4000
FOUR = [*NAMES, "clinic-d"]
"""Four sites: 3 neighbours each, threshold 2, so one may drop at any stage."""


def secure(deployment: Deployment, client: str, options: dict[str, Any], **federation: Any):
    config = deployment.config(client, options, **federation)
    config["secure_aggregation"] = {}
    return config


def jitter_run(
    folder: Path,
    callbacks: list[Callback] | None = None,
    kill: tuple[int, ...] = (),
    **table: Any,
) -> tuple[RunOutcome, list[SiteProcess]]:
    """One secure round of four recording jitter sites (``kill``: the indices of the sites
    the :class:`KillSites` callbacks signal; ``table``: ``[secure_aggregation]`` keys)."""
    deployment = deploy(folder, FOUR)
    for name in FOUR:
        deployment.options_file(name, size=SIZE)
    sites = start_sites(FOUR, folder, JITTER)
    for callback in callbacks or []:
        if isinstance(callback, KillSites):
            callback.sites = [sites[i] for i in kill]
    config = secure(deployment, JITTER, {"size": SIZE}, rounds=1)
    config["strategy"].update(fraction_evaluate=0.0)
    config["secure_aggregation"].update(table)
    try:
        outcome = run(config, out=folder / "run", callbacks=callbacks or [])
    finally:
        for site in sites:
            site.stop()
    return outcome, sites


def plain_average(folder: Path, names: list[str]) -> np.ndarray:
    """FedAvg of the plain updates the sites ``names`` recorded (round 1)."""
    updates = [np.load(folder / name / "update-1.npz") for name in names]
    weights = np.array([float(u["examples"]) for u in updates])
    vectors = np.stack([u["w"].astype(np.float64) for u in updates])
    return np.asarray(weights @ vectors / weights.sum())


class KillSites(Callback):
    """Sends the given site processes ``number`` (SIGKILL: and waits until they are gone,
    so the next stage finds them dead) once ``stage`` has been collected."""

    def __init__(self, stage: str, number: int = signal.SIGKILL) -> None:
        self.stage = stage
        self.number = number
        self.sites: list[SiteProcess] = []
        self.killed = False

    def on_event(self, event: Event) -> bool | None:
        stage = isinstance(event, SecureAggregationStage) and event.stage == self.stage
        if stage and not self.killed:
            for site in self.sites:
                site.signal(self.number)
                if self.number == signal.SIGKILL:
                    site.process.wait(30)
            self.killed = True
        return None


# -- the same model as on Ray and in-process ---------------------------------------------
def test_secure_sites_give_the_bits_of_the_same_config_on_ray_and_in_process(
    tmp_path: Path, ray_session: Any
) -> None:
    deployment = deploy(tmp_path)
    for name in NAMES:
        deployment.options_file(name, data="data.npz", epochs=1)
    sites = start_sites(NAMES, tmp_path, DIGITS)
    data = str(tmp_path / "{node_id}" / "data.npz")
    config = secure(deployment, DIGITS, {"data": data, "epochs": 1}, rounds=2)
    try:
        at_sites = run(config, out=tmp_path / "run")
    finally:
        for site in sites:
            site.stop()
    bits = parameters(at_sites)
    local = run(config, out=tmp_path / "local", overrides={"runtime": "local"})
    assert bits == parameters(local)
    assert bits == parameters(run(config, out=tmp_path / "ray", overrides={"runtime": "ray"}))
    summary = at_sites.summary
    assert summary["failures"] == 0 and summary["rounds"] == 2
    assert summary["secure_aggregation"]["enabled"] is True
    assert summary["secure_aggregation"]["round_threshold"] == 2
    stages = [
        (e["round"], e["stage"], e["clients"], e["dropped"])
        for e in events(tmp_path / "run")
        if e["type"] == "secagg_stage"
    ]
    order = ["advertise_keys", "share_keys", "masked_input", "unmasking"]
    assert stages == [(r, s, 3, []) for r in (1, 2) for s in order]
    log = (tmp_path / "clinic-c" / "site.log").read_text()
    for what in ("secure fit", "share keys", "mask inputs", "unmask"):
        assert f"site clinic-c: round 2: {what} (" in log


# -- dropouts ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stage", "summed"),
    [
        ("share_keys", ["hospital-a", "clinic-c", "clinic-d"]),  # killed before masking
        ("masked_input", FOUR),  # killed after masking: its input is in the sum
    ],
)
def test_a_site_killed_within_the_threshold_leaves_the_plain_sum_of_the_summed(
    tmp_path: Path, stage: str, summed: list[str]
) -> None:
    outcome, _ = jitter_run(tmp_path, [KillSites(stage)], kill=(1,))
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result is not None and outcome.result.parameters is not None
    model = outcome.result.parameters["w"].astype(np.float64)
    expected = plain_average(tmp_path, summed)
    assert np.abs(model - expected).max() < 1e-6  # the quantisation bound, far below 1e-6
    record = outcome.result.history[0]
    assert record.metrics["secagg/survivors"] == len(summed)
    failures = [(f.node_id, f.reason) for f in outcome.result.failures]
    if stage == "share_keys":
        assert len(failures) == 1 and failures[0][0] == "hospital-b"
        assert failures[0][1].startswith("secure aggregation: masked_input: ")
        assert "site 'hospital-b'" in failures[0][1]
    else:
        assert failures == []  # its input is in: it dropped from nothing the sum needs


def test_a_site_that_stops_answering_a_stage_drops_after_stage_timeout(tmp_path: Path) -> None:
    frozen = KillSites("share_keys", signal.SIGSTOP)
    outcome, _ = jitter_run(tmp_path, [frozen], kill=(3,), stage_timeout=3.0)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result is not None and outcome.result.parameters is not None
    model = outcome.result.parameters["w"].astype(np.float64)
    assert np.abs(model - plain_average(tmp_path, NAMES)).max() < 1e-6
    [failure] = outcome.result.failures
    assert failure.node_id == "clinic-d"
    assert failure.reason == (
        "secure aggregation: masked_input: worker 3 did not answer within stage_timeout=3 s"
    )


def test_distributed_noise_at_sites_gives_the_sum_its_noise_and_an_epsilon(tmp_path: Path) -> None:
    outcome, _ = jitter_run(tmp_path, noise_multiplier=0.5, l2_clip=1.0, honest_clients=2)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result is not None and outcome.result.parameters is not None
    record = outcome.result.history[0]
    assert 0 < record.metrics["epsilon"] < float("inf")
    # With noise every site weighs 1: the sum is 4 x the model. Each site adds the noise
    # that makes any 2 honest sites' noise reach noise_multiplier x l2_clip = 0.5, so the
    # four together add a standard deviation of 0.5 x sqrt(2) (the updates' norms are
    # below l2_clip: nothing is clipped).
    updates = [np.load(tmp_path / name / "update-1.npz")["w"] for name in FOUR]
    noise = 4 * outcome.result.parameters["w"].astype(np.float64) - np.sum(updates, axis=0)
    assert abs(float(noise.mean())) < 0.05
    assert 0.66 < float(noise.std()) < 0.75


def test_losing_more_sites_than_the_threshold_allows_fails_the_round_clearly(
    tmp_path: Path,
) -> None:
    outcome, _ = jitter_run(tmp_path, [KillSites("share_keys")], kill=(0, 2, 3))
    assert outcome.status == "failed"
    error = str(outcome.error)
    assert "round 1" in error and "failed at stage masked_input" in error
    assert "min_survivors=2" in error and "nothing was revealed" in error
    assert not (tmp_path / "run" / "model.safetensors").exists()


# -- what the server sees ----------------------------------------------------------------
def test_the_server_receives_masked_vectors_and_public_keys_never_an_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[tuple[str, bytes]] = []
    answer = jobs.Job.answer

    def record(self: jobs.Job[Any], body: bytes) -> bool:
        received.append((self.kind, body))
        return answer(self, body)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the server made a SecAggClient (it would hold private keys)")

    monkeypatch.setattr(jobs.Job, "answer", record)
    # The server's process may not make a protocol client: any attempt fails the round.
    monkeypatch.setattr(secagg.SecAggClient, "__init__", refuse)
    outcome, _ = jitter_run(tmp_path)
    assert outcome.status == "succeeded", outcome.error
    kinds = sorted(kind for kind, _ in received)
    assert kinds == sorted(["secure_fit", "share_keys", "mask_inputs", "unmask"] * 4)
    updates = [np.load(tmp_path / name / "update-1.npz")["w"] for name in FOUR]
    for update in updates:
        plain = update.astype(np.float32).tobytes()
        assert not any(plain[:64] in body for _, body in received)
    masked = []
    for kind, body in received:
        reply = read_secure_reply(body)
        if kind == "secure_fit":
            assert isinstance(reply, SecureFitReply) and read_frame(body)[1] == {}
        elif kind == "mask_inputs":
            assert isinstance(reply, StageResponse) and isinstance(reply.answer, np.ndarray)
            masked.append(reply.answer)
    assert len(masked) == 4
    for vector in masked:
        assert vector.dtype == np.uint64 and vector.shape == (SIZE + 1,)
        assert stats.kstest(vector.astype(np.float64) / 2.0**64, "uniform").pvalue > 1e-4
        top = (vector >> np.uint64(60)).astype(np.int64)
        assert stats.chisquare(np.bincount(top, minlength=16)).pvalue > 1e-4


# -- a site that joins again mid-round ---------------------------------------------------
def secure_fit(backend: SitesBackend, config: SecAggConfig, table: SecureAggregationConfig):
    return SecureFit(
        backend.put(PARAMETERS),
        [["a"]],
        Instructions.make(1),
        False,
        None,
        secagg=config,
        table=table,
        ids={"a": 0, "b": 1},
    )


def test_a_site_that_joins_again_mid_round_has_lost_its_state_and_drops(tmp_path: Path) -> None:
    home = TrustHome.init(tmp_path / "home")
    backend, port = serve(home, ["a", "b"])
    table = SecureAggregationConfig()
    config = table.round_config([0, 1], layout_of(PARAMETERS), 1, bytes(32))
    try:
        site = RawSite(port, tls_context(home, home.issue("a", "site")))
        assert site.join().status_code == 200
        pending = backend.call(0, secure_fit(backend, config, table))
        task = read_secure_task(site.poll().content)
        assert isinstance(task, SecureFitTask) and task.client == 0 and task.clients == (0, 1)
        assert list(task.parameters) == ["w", "b"]  # the server's order, not the blob's
        keys = SecureFitReply(task.job, True, {"loss": 2.0}, {"loss": 4}, {}, KEY, KEY)
        assert site.reply(task.job, secure_reply_frame(keys)).status_code == 200
        batch = pending.handle.result(10)
        assert [(a.round, a.client, a.mask_key) for a in batch.adverts] == [(1, 0, KEY)]
        assert batch.succeeded == ["a"] and batch.metric_sums == {"loss": 2.0}
        # Same session: the next stage goes to the site.
        shared = backend.call(0, ShareKeys(1, {0: NeighbourKeys(1, 0, (ADVERT,))}))
        stage = read_secure_task(site.poll().content)
        assert isinstance(stage, StageTask) and stage.message == NeighbourKeys(1, 0, (ADVERT,))
        refused = StageResponse("share_keys", stage.job, False, reason="out of memory")
        assert site.reply(stage.job, secure_reply_frame(refused)).status_code == 200
        assert shared.handle.result(10).failed == {0: "out of memory"}
        # A masked input's reply may be its vector (5 + 1 entries of 8 bytes) and a little.
        masked = backend.call(0, MaskInputs(1, {0: RoutedShares(1, 0, ())}))
        stage = read_secure_task(site.poll().content)
        assert site.reply(stage.job, bytes(10_000)).status_code == 413
        reason = masked.handle.result(10).failed[0]
        assert reason == "the site's reply has 10000 bytes, more than the 4144 allowed"
        # A new session (the lease of the last one ran out): its state is gone.
        assert wait_until(lambda: site.join().status_code == 200, 30)
        again = backend.call(0, Unmask(1, {0: UnmaskRequest(1, 0, frozenset(), frozenset(), 2)}))
        reason = again.handle.result(10).failed[0]
        assert "site 'a' joined again since it advertised its keys" in reason
    finally:
        backend.stop()


# -- the frames --------------------------------------------------------------------------
PARAMETERS = {"w": np.zeros(3, np.float32), "b": np.zeros(2, np.float32)}
KEY = bytes(range(32))
ADVERT = KeyAdvertisement(1, 1, KEY, KEY)


def stage_job(kind: str) -> StageJob:
    table = SecureAggregationConfig()
    config = table.round_config([0, 1, 2, 3], layout_of(PARAMETERS), 1, bytes(32))
    peers = sorted(config.neighbours_of(0))
    request: Any
    if kind == "share_keys":
        adverts = tuple(KeyAdvertisement(1, p, KEY, KEY) for p in peers[:2])
        request = ShareKeys(1, {0: NeighbourKeys(1, 0, adverts)})
    elif kind == "mask_inputs":
        request = MaskInputs(1, {0: RoutedShares(1, 0, ())})
    else:
        request = Unmask(1, {0: UnmaskRequest(1, 0, frozenset(peers[:1]), frozenset(), 3)})
    return StageJob("job", 0, "a", request, config)


def answer(job: StageJob, response: StageResponse) -> str | None:
    """The reason the job's client failed after ``response`` (``None``: it answered)."""
    job.answer(secure_reply_frame(response))
    reason: str | None = job.future.result().failed.get(0)
    return reason


def test_the_server_checks_each_answer_against_the_rounds_public_parameters() -> None:
    job = stage_job("share_keys")
    allowed = [a.client for a in job.message.keys]  # type: ignore[union-attr]
    good = ShareBundle(-1, -1, tuple(EncryptedShare(-1, p, b"x" * 40) for p in allowed))
    assert answer(job, StageResponse("share_keys", "job", True, good)) is None
    assert job.future.result().messages[0].shares[0].sender == 0  # the server names it
    outsider = ({0, 1, 2, 3} - set(allowed) - {0}).pop()
    stray = ShareBundle(-1, -1, (EncryptedShare(-1, outsider, b"x" * 40),))
    reason = answer(stage_job("share_keys"), StageResponse("share_keys", "job", True, stray))
    assert reason is not None and f"shares for [{outsider}], not one each" in reason
    narrow = np.zeros(6, np.uint32)
    reason = answer(stage_job("mask_inputs"), StageResponse("mask_inputs", "job", True, narrow))
    assert reason is not None and "a masked input is uint64 of shape (6,), got uint32" in reason
    right = stage_job("mask_inputs")
    assert answer(right, StageResponse("mask_inputs", "job", True, np.ones(6, np.uint64))) is None
    assert right.future.result().masked.clients == (0,)
    unmask = stage_job("unmask")
    asked = next(iter(unmask.message.survivors))  # type: ignore[union-attr]
    share = Share(1, (5, 6, 7), 32)
    extra = UnmaskReply(-1, -1, {asked: share}, {asked: share})
    reason = answer(unmask, StageResponse("unmask", "job", True, extra))
    assert reason is not None and "that the server did not ask for" in reason
    late = stage_job("unmask")
    assert answer(late, StageResponse("share_keys", "job", True, good)) is not None
    assert (
        "a reply of kind share_keys does not answer the unmask job"
        in late.future.result().failed[0]
    )


def test_malformed_secure_frames_are_refused_with_the_reason() -> None:
    def reply(header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> str:
        body = b"".join(frame({"v": 1, "job": "j", **header}, arrays_blob(arrays or {})))
        with pytest.raises(WireError) as caught:
            read_secure_reply(body)
        return str(caught.value)

    short = base64.b64encode(bytes(31)).decode()
    keys = {"metric_sums": {}, "metric_examples": {}, "stats": {}, "mask_key": short}
    assert "cipher_key" in reply({"kind": "secure_fit", "ok": True, **keys, "cipher_key": "x"})
    text = reply({"kind": "secure_fit", "ok": True, **keys, "cipher_key": short + "="})
    assert "String should have at most 44 characters" in text
    assert "a failure has a reason and nothing else" in reply(
        {"kind": "unmask", "ok": False, "reason": "no", "seed_shares": []}
    )
    assert "a masked input is one array 'masked' of unsigned integers" in reply(
        {"kind": "mask_inputs", "ok": True}, {"masked": np.zeros(3, np.int64)}
    )
    assert "a reply of kind share_keys has no arrays" in reply(
        {"kind": "share_keys", "ok": True, "shares": []}, {"x": np.zeros(1, np.uint64)}
    )
    assert "secret: unknown key" in reply({"kind": "unmask", "ok": True, "secret": 1})
    revealed = {"owner": 2, "x": 1, "values": base64.b64encode(bytes(15)).decode(), "length": 32}
    assert "a share of a 32-byte secret has 48 bytes, got 15" in reply(
        {"kind": "unmask", "ok": True, "seed_shares": [revealed], "key_shares": []}
    )
    task = StageTask("unmask", "j", "a", 1, 0, UnmaskRequest(1, 0, frozenset({1}), frozenset(), 2))
    body = b"".join(stage_task_frame(task))
    assert read_secure_task(body) == task
    header = json.loads(body[8:])
    header["keys"] = []
    with pytest.raises(WireError, match=r"a task of kind unmask has \['dropped', 'survivor_count'"):
        read_secure_task(b"".join(frame(header, b"")))
    with pytest.raises(WireError, match="round: Input should be greater than or equal to 0"):
        read_secure_task(b"".join(frame({**header, "round": -1, "keys": None}, b"")))
