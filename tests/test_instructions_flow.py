"""Instructions reach clients typed: the round comes from the schema, not the strategy."""

from __future__ import annotations

import pickle
from typing import Any, ClassVar

import numpy as np

from redfl import Client, FedAvg, StarFederation
from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.nodes.node import NodeContext


class Recorder(Client):
    """Records every instruction it gets (the local runtime runs it in this process)."""

    seen: ClassVar[list[tuple[str, str, Instructions]]] = []

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        Recorder.seen.append(("fit", self.node_id, config))
        noise = self.rng(config).normal(size=2).astype(np.float32)
        return {"w": parameters["w"] + noise}, 1, {}

    def evaluate(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[float, int, dict[str, float]]:
        Recorder.seen.append(("evaluate", self.node_id, config))
        return 1.0, 1, {"round": float(config["round"])}


class NoRound(FedAvg):
    """A strategy whose fit config has no ``round`` key, and extras for one client."""

    def fit_config(self, rnd: int) -> dict[str, Any]:
        return {}

    def client_config(self, rnd: int, node_id: str) -> dict[str, Any]:
        return {"lr_scale": 2.0, "learning_rate": 0.5} if node_id == "client-1" else {}


def run(strategy: FedAvg, rounds: int = 2) -> list[tuple[str, str, Instructions]]:
    Recorder.seen = []
    fed = StarFederation(
        Recorder,
        3,
        initial_parameters={"w": np.zeros(2, np.float32)},
        strategy=strategy,
        runtime="local",
        seed=5,
    )
    with fed:
        result = fed.train(rounds)
    assert [r.succeeded for r in result.history] == [3] * rounds
    assert result.failures == []
    return Recorder.seen


def test_a_fit_config_without_round_runs_and_clients_get_the_round() -> None:
    seen = run(NoRound(fraction_evaluate=1.0))
    fits = [(node, ins) for phase, node, ins in seen if phase == "fit"]
    assert sorted((ins.round, node) for node, ins in fits) == [
        (rnd, f"client-{i}") for rnd in (1, 2) for i in range(3)
    ]
    assert [ins.round for _, ins in fits] == [1, 1, 1, 2, 2, 2]
    assert all(isinstance(ins, Instructions) and ins.phase == "fit" for _, ins in fits)
    assert all(ins["round"] == ins.round for _, ins in fits)


def test_evaluation_gets_instructions_of_phase_evaluate_with_the_round() -> None:
    seen = run(NoRound(fraction_evaluate=1.0))
    evaluations = [(node, ins) for phase, node, ins in seen if phase == "evaluate"]
    assert sorted((ins.round, ins.phase, node) for node, ins in evaluations) == [
        (rnd, "evaluate", f"client-{i}") for rnd in (1, 2) for i in range(3)
    ]
    assert [ins.round for _, ins in evaluations] == [1, 1, 1, 2, 2, 2]
    assert all(isinstance(ins, Instructions) for _, ins in evaluations)


def test_per_client_extras_are_merged_over_the_rounds_instructions() -> None:
    seen = run(NoRound(), rounds=1)
    by_node = {node: ins for phase, node, ins in seen if phase == "fit"}
    special = by_node["client-1"]
    assert special.round == 1 and special.learning_rate == 0.5 and special["lr_scale"] == 2.0
    assert by_node["client-0"].learning_rate is None and "lr_scale" not in by_node["client-0"]


def test_the_round_from_instructions_and_from_a_plain_mapping_seed_the_same_rng() -> None:
    client = Recorder()
    client.bind(NodeContext("client-0", frozenset({"train"}), "f", 5, 0, 3), None)
    typed = client.rng(Instructions.make(4)).normal(size=3)
    plain = client.rng({"round": 4}).normal(size=3)
    other = client.rng(Instructions.make(5)).normal(size=3)
    np.testing.assert_array_equal(typed, plain)
    assert not np.array_equal(typed, other)


def test_instructions_pickle_with_plain_pickle_too() -> None:
    ins = Instructions.make(7, {"learning_rate": 0.1, "note": "x"}, phase="evaluate")
    back = pickle.loads(pickle.dumps(ins, protocol=5))
    assert back == ins and back["note"] == "x" and back.learning_rate == 0.1
    assert back.phase == "evaluate" and back.round == 7
