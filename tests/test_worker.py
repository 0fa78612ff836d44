"""The worker's star fast path, in-process: batches, partial sums, folded metrics."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from redfl import Client
from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.runtime.host import Host, Stats
from redfl.runtime.protocol import Handlers, Request, Runner
from redfl.runtime.replies import FitBatch
from redfl.runtime.star_runner import FitSegments, StarRunner
from redfl.runtime.topology_manager import TopologyManager
from redfl.schemas.base import virtual_nodes

SIZE = 1000  # floats per update: 4 kB in float32


class Scaled(Client):
    """Returns ``w + index`` with ``index + 1`` examples; ``client-3`` raises."""

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        if self.node_id == "client-3":
            raise RuntimeError("broken client")
        i = self.context.index
        return {"w": parameters["w"] + i}, i + 1, {"loss": float(i)}


def host(count: int) -> Host:
    ids = [f"client-{i}" for i in range(count)]
    nodes = virtual_nodes(Scaled, ids)
    return Host(0, "fed", 0, count, nodes, TopologyManager(None, dict.fromkeys(ids, 0)))


def fit(worker: Host, ids: Sequence[str], size: int = SIZE, fold: bool = True) -> FitBatch:
    zero = {"w": np.zeros(size, np.float32)}
    return worker.handle(FitSegments(zero, [ids], Instructions.make(1), fold))


def test_a_folded_batch_is_one_partial_sum_with_folded_metrics() -> None:
    batch = fit(host(6), [f"client-{i}" for i in range(6)])
    ok = [0, 1, 2, 4, 5]
    assert batch.updates == []
    assert batch.succeeded == [f"client-{i}" for i in ok]
    assert [f.node_id for f in batch.failures] == ["client-3"]
    assert "broken client" in batch.failures[0].reason
    assert batch.failures[0].round == 1
    assert batch.total is not None
    assert batch.total.count == 5 and batch.total.weight == sum(i + 1 for i in ok)
    expected = sum((i + 1) * i for i in ok)
    np.testing.assert_array_equal(batch.total.sums["w"], np.full(SIZE, expected, np.float64))
    assert batch.metric_sums == {"loss": float(expected)}
    assert batch.metric_examples == {"loss": sum(i + 1 for i in ok)}


def test_the_folded_reply_does_not_grow_with_the_number_of_clients() -> None:
    sizes = {}
    for count in (10, 200):
        ids = [f"client-{i}" for i in range(count)]
        sizes[count] = len(pickle.dumps(fit(host(count), ids)))
    # 200 individual float32 updates would be 800 kB; the folded reply holds one float64 sum
    # plus a short id per client.
    assert sizes[200] < 2 * SIZE * 8 + 200 * 40
    assert sizes[200] - sizes[10] < 190 * 40


def test_an_unfolded_batch_keeps_each_update_in_order() -> None:
    ids = ["client-5", "client-0", "client-2"]
    batch = fit(host(6), ids, size=4, fold=False)
    assert batch.total is None
    assert [u.node_id for u in batch.updates] == ids
    assert [float(u.parameters["w"][0]) for u in batch.updates] == [5.0, 0.0, 2.0]
    assert [u.num_examples for u in batch.updates] == [6, 1, 3]


class EchoRunner(Runner):
    """A runner of a made-up programming model, installed on its first request."""

    def register(self, handlers: Handlers) -> None:
        handlers.add(Echo, self.echo)

    def echo(self, request: Echo) -> str:
        return f"{self.host.index}:{request.text}"

    def stats(self) -> dict[str, float]:
        return {"echo_runner": 1.0}


@dataclass(frozen=True)
class Echo(Request[str]):
    runner = EchoRunner

    text: str


@dataclass(frozen=True)
class Orphan(Request[str]):
    """A request no runner answers."""


def test_a_new_runner_is_installed_by_its_first_request_and_adds_its_stats() -> None:
    worker = host(2)
    assert "echo_runner" not in worker.handle(Stats())
    assert worker.handle(Echo("hi")) == "0:hi"
    assert worker.handle(Stats())["echo_runner"] == 1.0
    assert worker.handle(Stats())["hosted"] == 2


def test_a_request_nobody_answers_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"worker 0 has no handler for Orphan; it answers .*Stats"):
        host(1).handle(Orphan())


def test_a_handler_for_another_request_class_is_refused() -> None:
    runner = StarRunner(host(1))
    with pytest.raises(TypeError, match=r"takes EvaluateClients, not FitSegments"):
        Handlers().add(FitSegments, runner.evaluate)  # type: ignore[arg-type]
    handlers = Handlers()
    runner.register(handlers)
    with pytest.raises(ValueError, match="a handler for FitSegments is already registered"):
        handlers.add(FitSegments, runner.fit)
