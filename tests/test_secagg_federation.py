"""Secure aggregation in a federation, in-process: FedAvg within the quantisation bound,
dropouts at every stage, failure beyond the threshold, refused strategies and settings,
what the server stores looks uniform, distributed noise and its epsilon, events and the
run folder, the hierarchy per subtree."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from typer.testing import CliRunner

from redfl import FedAvg, StarFederation
from redfl.algorithms.fedopt import FedAdam
from redfl.cli import app
from redfl.core.config import ConfigError
from redfl.core.instructions import Instructions
from redfl.core.result import FederationError
from redfl.core.server_state import load_state, save_state
from redfl.examples.echo import JitterClient
from redfl.nodes.node import NodeContext
from redfl.privacy.secagg import SecAggServer, SecureAggregationConfig, Stage
from redfl.privacy.secagg.keys import agree
from redfl.privacy.secagg.quantize import Quantizer
from redfl.run.api import run
from redfl.run.build import federation_from_config
from redfl.run.config import parse_config
from redfl.run.digest import config_diff, config_digest, digest_fields
from redfl.runtime.resources import ResourcesConfig
from redfl.schemas.callbacks import Callback
from redfl.schemas.hierarchical import HierarchicalFederation
from redfl.topology import relay_tree

JITTER = "redfl.examples.echo:JitterClient"


class Events(Callback):
    """Keeps every event."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_event(self, event):
        self.events.append(event)
        return None


def star(
    clients,
    *,
    secure: SecureAggregationConfig | None,
    size: int = 40,
    scale: float = 0.01,
    max_examples: int = 50,
    ids=None,
    seed: int = 0,
    strategy=None,
    callbacks=(),
    workers: int | None = None,
) -> StarFederation:
    return StarFederation(
        JitterClient,
        clients,
        initial_parameters=JitterClient.initial_parameters(size),
        strategy=strategy or FedAvg(min_fit_clients=clients),
        options={"size": size, "scale": scale, "max_examples": max_examples},
        client_ids=ids,
        secure_aggregation=secure,
        seed=seed,
        runtime="local",
        callbacks=callbacks,
        resources=ResourcesConfig(num_workers=workers) if workers else None,
    )


def train(fed: StarFederation, rounds: int = 1) -> np.ndarray:
    with fed:
        result = fed.train(rounds)
    assert result.parameters is not None
    return np.asarray(result.parameters["w"])


def mean_bound(quantizer: Quantizer, weights: np.ndarray, sums: np.ndarray, current) -> np.ndarray:
    """How far one round's secure FedAvg mean may be from the plain one, per coordinate:
    the encoding's rounding (quantize's bound), then both results cast to float32."""
    n, total = len(weights), float(weights.sum())
    sum_error = n * quantizer.max_weight * quantizer.clip / (2 * quantizer.levels)
    weight_error = n * quantizer.max_weight / (2 * quantizer.levels)
    mean = current + sums / total
    spread = sum_error / total + np.abs(sums) * weight_error / (total * (total - weight_error))
    return np.asarray(spread + 2 * np.spacing(np.abs(mean).astype(np.float32)) + 1e-12)


@settings(max_examples=12, deadline=None)
@given(
    clients=st.integers(3, 12),
    scale=st.floats(1e-4, 1.0),
    max_examples=st.integers(2, 900),
    seed=st.integers(0, 2**16),
    bits=st.integers(16, 40),
)
def test_secure_fedavg_is_plain_fedavg_within_the_quantisation_bound(
    clients, scale, max_examples, seed, bits
) -> None:
    table = SecureAggregationConfig(bits=bits)
    common = {"size": 25, "scale": scale, "max_examples": max_examples, "seed": seed}
    secure = train(star(clients, secure=table, **common))
    plain = train(star(clients, secure=None, **common))
    # The plain round's sum, rebuilt from the same seeded updates, sets the bound.
    parameters, weights = [], []
    for i in range(clients):
        client = JitterClient(25, scale, max_examples)
        client.bind(NodeContext(f"client-{i}", frozenset({"train"}), "fed", seed, i, 1), None)
        new, examples, _ = client.fit(JitterClient.initial_parameters(25), Instructions.make(1))
        parameters.append(new["w"].astype(np.float64))
        weights.append(float(examples))
    w = np.array(weights)
    sums = (np.array(parameters) * w[:, None]).sum(axis=0)
    quantizer = table.round_config(range(clients), (("w", (25,)),), 1, bytes(32)).quantizer
    bound = mean_bound(quantizer, w, sums, np.zeros(25))
    assert np.all(np.abs(secure.astype(np.float64) - plain) <= bound)
    assert np.abs(plain).max() > 0


def test_the_same_seed_gives_the_same_model_and_a_weighted_optimiser_runs_on_the_sum() -> None:
    table = SecureAggregationConfig()
    first = train(star(8, secure=table, seed=4), rounds=3)
    again = train(star(8, secure=table, seed=4), rounds=3)
    other = train(star(8, secure=table, seed=5), rounds=3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    adam = train(star(8, secure=table, strategy=FedAdam(min_fit_clients=8)), rounds=2)
    plain_adam = train(star(8, secure=None, strategy=FedAdam(min_fit_clients=8)), rounds=2)
    assert np.allclose(adam, plain_adam, atol=1e-4)
    assert np.abs(plain_adam).max() > 1e-3


STAGES: list[Stage] = ["advertise_keys", "share_keys", "masked_input", "unmasking"]


@pytest.mark.parametrize("stage", STAGES)
def test_dropouts_up_to_the_threshold_give_the_survivors_plain_sum(stage: Stage) -> None:
    # 20 clients: k=4, t=2; with 2 silent, every client keeps 2 neighbours.
    ids = [f"client-{i}" for i in range(20)]
    silent = ids[3:5]
    events = Events()
    table = SecureAggregationConfig()
    fed = star(20, secure=table, callbacks=[events], strategy=FedAvg(min_fit_clients=2))
    assert fed.secure is not None
    fed.secure.silent = {stage: frozenset(silent)}
    with fed:
        result = fed.train(1)
    assert result.parameters is not None
    # Silent after masking: their inputs are in the sum; before: they are not.
    in_sum = ids if stage == "unmasking" else [i for i in ids if i not in silent]
    plain = train(star(len(in_sum), secure=None, ids=in_sum))
    assert np.abs(result.parameters["w"] - plain).max() < 1e-6
    assert result.history[0].metrics["secagg/survivors"] == len(in_sum)
    stages = [e for e in events.events if e.type == "secagg_stage"]
    assert [e.stage for e in stages] == STAGES
    dropped = {e.stage: set(e.dropped) for e in stages}
    assert dropped[stage] == set(silent)
    assert all(not d for s, d in dropped.items() if s != stage)
    failed = {f.node_id for f in result.failures}
    assert failed == (set() if stage == "unmasking" else set(silent))
    assert all("secure aggregation" in f.reason for f in result.failures)


def test_dropouts_beyond_the_threshold_fail_the_round_naming_the_stage() -> None:
    fed = star(20, secure=SecureAggregationConfig(), strategy=FedAvg(min_fit_clients=2))
    assert fed.secure is not None
    fed.secure.silent = {"share_keys": frozenset(f"client-{i}" for i in range(12))}
    with fed, pytest.raises(FederationError) as caught:
        fed.train(1)
    text = str(caught.value)
    assert "round 1" in text and "failed at stage share_keys" in text
    assert "nothing was revealed" in text
    assert fed.round == 0 and fed.model() is None


MAX_WEIGHT = 43.5  # clients 9 and 11 draw 44 and 45 examples in round 1


def test_a_client_whose_fit_fails_drops_before_advertising() -> None:
    events = Events()
    table = SecureAggregationConfig(max_weight=MAX_WEIGHT)
    fed = star(12, secure=table, callbacks=[events], strategy=FedAvg(min_fit_clients=2))
    with fed:
        result = fed.train(1)
    heavy = [f for f in result.failures if f"max_weight={MAX_WEIGHT:g}" in f.reason]
    # Clients with more examples than max_weight fail, the others sum.
    assert 1 <= len(heavy) <= 2, result.failures
    assert len(result.failures) == len(heavy)
    first = next(e for e in events.events if e.type == "secagg_stage")
    assert set(first.dropped) == {f.node_id for f in heavy}
    assert first.clients == 12 - len(heavy)
    assert result.history[0].succeeded == 12 - len(heavy)


def secure_config(strategy: str | None = None, **table: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "federation": {"rounds": 2, "runtime": "local"},
        "client": {"target": JITTER, "num_clients": 8, "options": {"size": 30}},
        "secure_aggregation": table,
    }
    if strategy is not None:
        config["strategy"] = {"name": strategy, "min_fit_clients": 8}
    return config


@pytest.mark.parametrize(
    ("strategy", "name"),
    [
        ("krum", "Krum"),
        ("fedmedian", "FedMedian"),
        ("fedtrimmedavg", "FedTrimmedAvg"),
        ("bulyan", "Bulyan"),
        ("qfedavg", "QFedAvg"),
    ],
)
def test_strategies_that_need_every_update_are_refused_naming_the_conflict(strategy, name):
    config = parse_config(secure_config(strategy))
    with pytest.raises(ConfigError) as caught:
        federation_from_config(config)
    text = str(caught.value)
    assert text.startswith("invalid config: secure_aggregation:")
    assert f"the strategy {name}" in text and "needs every client's update" in text
    assert "learns only their sum" in text


def test_server_side_dp_is_refused_and_client_side_dp_runs(tmp_path) -> None:
    config = secure_config()
    config["privacy"] = {"mode": "fixed", "side": "server", "noise_multiplier": 0.0}
    with pytest.raises(ConfigError, match=r'side = "client"'):
        federation_from_config(parse_config(config))
    config["privacy"]["side"] = "client"
    outcome = run(config, out=tmp_path / "run")
    assert outcome.status == "succeeded", outcome.error


def test_settings_that_cannot_work_are_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"secure_aggregation: bits \(40\) must be at most"):
        parse_config(secure_config(bits=40, modulus_bits=32))
    with pytest.raises(ConfigError, match=r"secure_aggregation\.clip: Input should be greater"):
        parse_config(secure_config(clip=0))
    with pytest.raises(ConfigError, match=r"threshold \(9\) must be at most neighbours \(4\)"):
        parse_config(secure_config(neighbours=4, threshold=9))
    with pytest.raises(ConfigError, match="secure_aggregation: neighbours must be an even"):
        federation_from_config(parse_config(secure_config(neighbours=3)))
    ring = {
        "client": {"target": JITTER, "num_clients": 4},
        "topology": {"schema": "ring", "algorithm": "gossip"},
        "secure_aggregation": {},
    }
    with pytest.raises(ConfigError, match="the ring schema has no server"):
        parse_config(ring)
    loud = secure_config(noise_multiplier=1.0, bits=32)
    with pytest.raises(ConfigError, match=r"above the 2e\+12 drawn exactly: lower bits \(32\)"):
        federation_from_config(parse_config(loud))
    one = secure_config()
    one["client"]["num_clients"] = 1
    with pytest.raises(ConfigError, match="needs at least 2 clients a round"):
        federation_from_config(parse_config(one))


def test_what_the_server_stores_for_one_client_looks_uniform(monkeypatch) -> None:
    stored = []
    collect = SecAggServer.collect_masked

    def spy(self, inputs):
        parts = list(inputs)
        stored.extend(parts)
        return collect(self, parts)

    monkeypatch.setattr(SecAggServer, "collect_masked", spy)
    # One worker per client: each masked sum the server holds is one client's input.
    fed = star(6, secure=SecureAggregationConfig(), size=4000, workers=6)
    train(fed)
    assert len(stored) == 6 and all(len(part.clients) == 1 for part in stored)
    vector = stored[0].vector
    assert vector.dtype == np.uint64
    fractions = vector.astype(np.float64) / 2.0**64
    assert stats.kstest(fractions, "uniform").pvalue > 1e-4
    top = (vector >> np.uint64(60)).astype(np.int64)
    assert stats.chisquare(np.bincount(top, minlength=16)).pvalue > 1e-4
    # The same test sees the structure of an unmasked encoding.
    table = SecureAggregationConfig()
    config = table.round_config(range(6), (("w", (4000,)),), 1, bytes(32))
    rng = np.random.default_rng(0)
    plain = config.quantizer.to_ring(
        config.quantizer.encode({"w": rng.normal(0, 0.01, 4000)}, 10.0, config.layout)
    )
    assert stats.kstest(plain.astype(np.float64) / 2.0**64, "uniform").pvalue < 1e-6


def test_distributed_noise_reaches_the_sum_and_epsilon_is_reported() -> None:
    table = SecureAggregationConfig(
        noise_multiplier=1.0, l2_clip=0.5, honest_clients=10, min_survivors=10
    )
    events = Events()
    size = 20_000
    fed = star(10, secure=table, size=size, scale=1e-4, callbacks=[events])
    with fed:
        result = fed.train(2)
    epsilons = [r.metrics["epsilon"] for r in result.history]
    assert 0 < epsilons[0] < epsilons[1] < 100
    plain = train(star(10, secure=None, size=size, scale=1e-4), rounds=1)
    fed = star(10, secure=table, size=size, scale=1e-4)
    noisy = train(fed, rounds=1)
    # Equal weights: the mean carries noise of std z * C / n per coordinate.
    spread = float(np.std(noisy.astype(np.float64) - plain))
    assert spread == pytest.approx(1.0 * 0.5 / 10, rel=0.05)


def test_events_and_summary_of_a_secure_run(tmp_path) -> None:
    outcome = run(secure_config(), out=tmp_path / "run")
    assert outcome.status == "succeeded", outcome.error
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    secure = summary["secure_aggregation"]
    assert secure["enabled"] is True
    assert secure["modulus_bits"] == 64 and secure["bits"] == 32 and secure["clip"] == 8.0
    assert secure["round_neighbours"] == 4 and secure["round_threshold"] == 3
    lines = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    stages = [(e["round"], e["stage"], e["clients"]) for e in lines if e["type"] == "secagg_stage"]
    order = ["advertise_keys", "share_keys", "masked_input", "unmasking"]
    assert stages == [(r, s, 8) for r in (1, 2) for s in order]
    plain = run({**secure_config(), "secure_aggregation": None}, out=tmp_path / "plain")
    assert plain.summary["secure_aggregation"] == {"enabled": False}
    assert "secagg_stage" not in (tmp_path / "plain" / "events.jsonl").read_text()


def test_a_hierarchy_sums_each_lcp_securely_within_the_bound() -> None:
    def hierarchy(
        secure: SecureAggregationConfig | None, clients: int = 16, lcps: int = 2
    ) -> HierarchicalFederation:
        return HierarchicalFederation(
            JitterClient,
            clients,
            initial_parameters=JitterClient.initial_parameters(30),
            options={"size": 30},
            tree=relay_tree(1, 2, lcps),
            runtime="local",
            secure_aggregation=secure,
        )

    with hierarchy(SecureAggregationConfig()) as fed:
        secure = fed.train(2)
    with hierarchy(None) as fed:
        plain = fed.train(2)
    assert secure.parameters is not None and plain.parameters is not None
    assert np.abs(secure.parameters["w"] - plain.parameters["w"]).max() < 1e-6
    assert np.abs(plain.parameters["w"]).max() > 1e-3
    # An LCP with one client cannot hide it: the LCP fails, the rest goes on.
    with hierarchy(SecureAggregationConfig(), clients=7, lcps=2) as fed:
        fed.min_coverage = 0.1
        result = fed.train(1)
    lone = [f for f in result.failures if "at least 2 clients' updates under an LCP" in f.reason]
    assert len(lone) == 1


def test_a_client_keeps_its_cipher_key_across_rounds_but_never_its_mask_key(monkeypatch):
    adverts: list[dict[int, Any]] = []
    collect = SecAggServer.collect_keys

    def spy(self, messages):
        kept = list(messages)
        adverts.append({m.client: m for m in kept})
        return collect(self, kept)

    monkeypatch.setattr(SecAggServer, "collect_keys", spy)
    exchanges = []

    def counted(private, peers):
        exchanges.append(len(peers))
        return agree(private, peers)

    monkeypatch.setattr("redfl.privacy.secagg.client.agree", counted)
    secure = train(star(10, secure=SecureAggregationConfig()), rounds=3)
    plain = train(star(10, secure=None), rounds=3)
    assert np.abs(secure - plain).max() < 1e-6
    first, second, third = adverts
    assert all(first[c].cipher_key == second[c].cipher_key == third[c].cipher_key for c in first)
    assert all(len({a[c].mask_key for a in adverts}) == 3 for c in first)
    # Each round: one mask agreement per client and neighbour; cipher ones in round 1 only.
    per_round = 10 * 4
    assert sum(exchanges) == per_round * 3 + per_round


def test_the_privacy_spent_by_distributed_noise_survives_a_saved_state(tmp_path) -> None:
    table = SecureAggregationConfig(noise_multiplier=1.0, min_survivors=8)
    with star(8, secure=table) as fed:
        first = fed.train(2)
        save_state(fed.server_state(), tmp_path / "state")
    with star(8, secure=table) as fed:
        fed.load_server_state(load_state(tmp_path / "state"))
        resumed = fed.train(1)
    with star(8, secure=table) as fed:
        straight = fed.train(3)
    epsilons = [r.metrics["epsilon"] for r in (*first.history, *resumed.history[2:])]
    assert epsilons == [r.metrics["epsilon"] for r in straight.history]
    assert epsilons[0] < epsilons[1] < epsilons[2]


def test_the_cli_refuses_a_robust_strategy_with_secure_aggregation_in_one_line(tmp_path):
    path = tmp_path / "krum.toml"
    path.write_text(
        '[federation]\nruntime = "local"\nrounds = 1\n'
        f'[client]\ntarget = "{JITTER}"\nnum_clients = 8\n'
        '[strategy]\nname = "krum"\nmin_fit_clients = 8\n'
        "[secure_aggregation]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "redfl: error: invalid config: secure_aggregation"
    )
    assert "Krum needs every client's update" in lines[0]
    assert not (tmp_path / "run").exists()


def test_the_table_enters_the_config_digest_only_when_present() -> None:
    base = {"client": {"target": JITTER, "num_clients": 4}}
    absent = parse_config(base)
    empty = parse_config({**base, "secure_aggregation": {}})
    other = parse_config({**base, "secure_aggregation": {"clip": 2.0}})
    # Absent: no field at all, so configs written before the table existed keep their digest.
    everything = config_diff(absent, empty, everything=True)
    assert everything and all(f.startswith("secure_aggregation.") for f in everything)
    assert not any(key.startswith("secure_aggregation") for key in digest_fields(absent, True))
    assert len({config_digest(absent), config_digest(empty), config_digest(other)}) == 3


def test_a_32_bit_ring_takes_20_bits_by_default_and_sums_within_its_bound() -> None:
    table = SecureAggregationConfig(modulus_bits=32)
    assert table.entry_bits == 20
    secure = train(star(12, secure=table, scale=0.1))
    plain = train(star(12, secure=None, scale=0.1))
    quantizer = table.round_config(range(12), (("w", (40,)),), 1, bytes(32)).quantizer
    assert quantizer.modulus_bits == 32 and quantizer.dtype == np.uint32
    # Each coordinate of the mean is within the rounding of 12 weighted entries.
    assert 0 < np.abs(secure - plain).max() <= 12 * 1000.0 * 8.0 / (2 * quantizer.levels)
