"""The worker's star fast path, in-process: batches, partial sums, folded metrics."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from redfl import Client
from redfl.core.arrays import Parameters
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.worker import Worker
from redfl.schemas.base import virtual_nodes

SIZE = 1000  # floats per update: 4 kB in float32


class Scaled(Client):
    """Returns ``w + index`` with ``index + 1`` examples; ``client-3`` raises."""

    def fit(
        self, parameters: Parameters, config: dict[str, Any]
    ) -> tuple[Parameters, int, dict[str, float]]:
        if self.node_id == "client-3":
            raise RuntimeError("broken client")
        i = self.context.index
        return {"w": parameters["w"] + i}, i + 1, {"loss": float(i)}


def worker(count: int) -> Worker:
    ids = [f"client-{i}" for i in range(count)]
    nodes = virtual_nodes(Scaled, ids)
    return Worker(0, "fed", 0, count, nodes, TopologyManager(None, dict.fromkeys(ids, 0)))


def test_a_folded_batch_is_one_partial_sum_with_folded_metrics() -> None:
    ids = [f"client-{i}" for i in range(6)]
    zero = {"w": np.zeros(SIZE, np.float32)}
    batch = worker(6).fit_batch(zero, ids, {"round": 1}, fold=True)
    ok = [0, 1, 2, 4, 5]
    assert batch.updates == []
    assert batch.succeeded == [f"client-{i}" for i in ok]
    assert [f.node_id for f in batch.failures] == ["client-3"]
    assert "broken client" in batch.failures[0].reason
    assert batch.total is not None
    assert batch.total.count == 5 and batch.total.weight == sum(i + 1 for i in ok)
    expected = sum((i + 1) * i for i in ok)
    np.testing.assert_array_equal(batch.total.sums["w"], np.full(SIZE, expected, np.float64))
    assert batch.metric_sums == {"loss": float(expected)}
    assert batch.metric_examples == {"loss": sum(i + 1 for i in ok)}


def test_the_folded_reply_does_not_grow_with_the_number_of_clients() -> None:
    zero = {"w": np.zeros(SIZE, np.float32)}
    sizes = {}
    for count in (10, 200):
        ids = [f"client-{i}" for i in range(count)]
        sizes[count] = len(pickle.dumps(worker(count).fit_batch(zero, ids, {"round": 1}, True)))
    # 200 individual float32 updates would be 800 kB; the folded reply holds one float64 sum
    # plus a short id per client.
    assert sizes[200] < 2 * SIZE * 8 + 200 * 40
    assert sizes[200] - sizes[10] < 190 * 40


def test_an_unfolded_batch_keeps_each_update_in_order() -> None:
    ids = ["client-5", "client-0", "client-2"]
    zero = {"w": np.zeros(4, np.float32)}
    batch = worker(6).fit_batch(zero, ids, {"round": 1}, fold=False)
    assert batch.total is None
    assert [u.node_id for u in batch.updates] == ids
    assert [float(u.parameters["w"][0]) for u in batch.updates] == [5.0, 0.0, 2.0]
    assert [u.num_examples for u in batch.updates] == [6, 1, 3]
