"""Typed instructions from strategies to clients: ``proximal_mu``, ``learning_rate``, and
``evaluate_config`` beside ``fit_config``, through wrappers and attacked clients."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from redfl import Client, StarFederation
from redfl.algorithms import FedAdam, FedAvg, FedProx, Strategy
from redfl.attacks import LabelFlip, LittleIsEnough, MaliciousClient
from redfl.core.instructions import Instructions
from redfl.examples.digits import DigitsClient
from redfl.nodes.node import NodeContext
from redfl.privacy import DPAdaptiveClipping, DPFixedClipping


class Tuned(FedAvg):
    def evaluate_config(self, rnd: int) -> Mapping[str, Any]:
        return {"batch": 64, "local_epochs": rnd}


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: DPFixedClipping(s),
        lambda s: DPAdaptiveClipping(s, side="client"),
        lambda s: LittleIsEnough(s, ["client-0"]),
        lambda s: LittleIsEnough(DPFixedClipping(s), ["client-0"]),
    ],
)
def test_wrappers_forward_both_configs(wrap: Any) -> None:
    strategy: Strategy = wrap(Tuned())
    evaluate = Instructions.make(4, strategy.evaluate_config(4), phase="evaluate")
    assert (evaluate.local_epochs, evaluate["batch"], evaluate.phase) == (4, 64, "evaluate")
    fit = wrap(FedProx(proximal_mu=0.3)).fit_config(2)
    assert fit.proximal_mu == 0.3 and fit["proximal_mu"] == 0.3 and fit.round == 2


def test_defaults_carry_only_the_round() -> None:
    assert dict(FedAvg().fit_config(3)) == {"round": 3, "phase": "fit"}
    assert dict(FedAvg().evaluate_config(3)) == {"round": 3, "phase": "evaluate"}
    assert FedAvg().fit_config(3).get("learning_rate") is None


def test_instructions_cross_process_boundaries_by_value() -> None:
    sent = Instructions.make(5, {"proximal_mu": 0.1, "learning_rate": 0.2, "note": [1, 2]})
    received = pickle.loads(pickle.dumps(sent))
    assert received == sent and received.extra["note"] == [1, 2]
    with pytest.raises(TypeError):
        received.extra["note"] = 3


def test_plain_mappings_are_lifted_for_client_code() -> None:
    lifted = Instructions.of({"round": 2, "proximal_mu": 0.5, "label_flip": 10})
    assert (lifted.round, lifted.proximal_mu, lifted["label_flip"]) == (2, 0.5, 10)
    same = Instructions.make(1)
    assert Instructions.of(same) is same


class Recorder(Client):
    seen: list[Any] = []  # noqa: RUF012 - one process (runtime="local")

    def fit(self, parameters: Any, config: Any) -> Any:
        Recorder.seen.append(config)
        return parameters, 1, {}


def test_clients_receive_typed_fields_and_attack_keys() -> None:
    Recorder.seen = []
    zeros = {"w": np.zeros(2, np.float32)}
    StarFederation(
        Recorder, 2, initial_parameters=zeros, strategy=FedProx(proximal_mu=0.7), runtime="local"
    ).train(1)
    assert [c.proximal_mu for c in Recorder.seen] == [0.7, 0.7]
    Recorder.seen = []
    attacked = MaliciousClient(Recorder(), LabelFlip(10), frozenset({"client-0"}))
    attacked.bind(NodeContext("client-0", frozenset({"train"}), "f", 0, 0, 2), None)
    attacked.fit(zeros, {"round": 1, "proximal_mu": 0.2})  # type: ignore[arg-type]
    (config,) = Recorder.seen
    assert isinstance(config, Instructions)
    assert (config.proximal_mu, config["label_flip"], config.round) == (0.2, 10, 1)


def test_a_client_learning_rate_reaches_the_digits_model() -> None:
    def run(strategy: Strategy, lr: float) -> Any:
        options = {"lr": lr}
        federation = StarFederation(
            DigitsClient,
            3,
            initial_parameters=DigitsClient.initial_parameters(DigitsClient.Options()),
            strategy=strategy,
            options=options,
            runtime="local",
        )
        return federation.train(2).parameters

    typed = run(FedAdam(eta=0.05, eta_l=0.02), lr=0.5)
    own = run(FedAdam(eta=0.05), lr=0.02)
    other = run(FedAdam(eta=0.05), lr=0.5)
    assert all(np.array_equal(typed[k], own[k]) for k in own)
    assert not all(np.array_equal(typed[k], other[k]) for k in own)
