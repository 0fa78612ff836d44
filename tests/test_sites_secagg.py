"""Secure aggregation at sites: real ``redfl site run`` processes over mutual TLS on
127.0.0.1. The same config gives the same model at sites as on Ray and in-process; a site
killed before or after masking leaves the sum of the others (or of all, once its input is
in); what the server receives for a site's update is masked; losing more sites than the
threshold allows fails the round with the protocol's reason."""

from __future__ import annotations

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
    SiteProcess,
    deploy,
    events,
    parameters,
    start_sites,
)

from redfl.core.events import Event, SecureAggregationStage
from redfl.run.api import RunOutcome, run
from redfl.runtime.sites import jobs
from redfl.runtime.sites.secure_wire import SecureFitReply, StageResponse, read_secure_reply
from redfl.runtime.sites.wire import read_frame
from redfl.schemas.callbacks import Callback

JITTER = "site_clients:RecordingJitter"
SIZE = 4000
FOUR = [*NAMES, "clinic-d"]
"""Four sites: 3 neighbours each, threshold 2, so one may drop at any stage."""


def secure(deployment: Deployment, client: str, options: dict[str, Any], **federation: Any):
    config = deployment.config(client, options, **federation)
    config["secure_aggregation"] = {}
    return config


def jitter_run(
    folder: Path, callbacks: list[Callback] | None = None, kill: tuple[int, ...] = ()
) -> tuple[RunOutcome, list[SiteProcess]]:
    """One secure round of four recording jitter sites (``kill``: the indices of the sites
    the :class:`KillSites` callbacks kill)."""
    deployment = deploy(folder, FOUR)
    for name in FOUR:
        deployment.options_file(name, size=SIZE)
    sites = start_sites(FOUR, folder, JITTER)
    for callback in callbacks or []:
        if isinstance(callback, KillSites):
            callback.sites = [sites[i] for i in kill]
    config = secure(deployment, JITTER, {"size": SIZE}, rounds=1)
    config["strategy"].update(fraction_evaluate=0.0)
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
    """SIGKILLs the given site processes once ``stage`` has been collected (and waits until
    they are gone, so the next stage finds them dead)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.sites: list[SiteProcess] = []
        self.killed = False

    def on_event(self, event: Event) -> bool | None:
        stage = isinstance(event, SecureAggregationStage) and event.stage == self.stage
        if stage and not self.killed:
            for site in self.sites:
                site.signal(signal.SIGKILL)
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

    monkeypatch.setattr(jobs.Job, "answer", record)
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
