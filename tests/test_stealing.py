"""Work stealing: an idle worker runs a slow worker's pending clients; results do not change."""

from __future__ import annotations

import numpy as np
from scale_nodes import SIZE, SlowEven

from redfl import FedAvg, ResourcesConfig, StarFederation
from redfl.runtime.backend import Outcome
from redfl.runtime.dispatch import Chunk, make_chunks, run_chunks
from redfl.runtime.local import LocalBackend

TWO_WORKERS = ResourcesConfig(num_workers=2, worker={"CPU": 0.5})


def federation(runtime: str) -> StarFederation:
    # Placement is round-robin: worker 0 hosts the even (slow) clients, worker 1 the odd.
    return StarFederation(
        SlowEven,
        16,
        initial_parameters={"w": np.zeros(SIZE, np.float32)},
        strategy=FedAvg(),
        resources=TWO_WORKERS,
        runtime=runtime,  # type: ignore[arg-type]
        seed=3,
    )


def test_an_idle_worker_takes_the_slow_workers_clients_and_results_stay_bit_identical(
    ray_session,
):
    with federation("ray") as fed:
        on_ray = fed.train(2)
        stats = fed.worker_stats()
    with federation("local") as fed:
        local = fed.train(2)
    assert stats[0]["guest_fits"] == 0  # the slow worker took nothing
    assert stats[1]["guest_fits"] > 0  # the fast one ran some of the slow one's clients
    assert stats[1]["guests_built"] > 0
    assert on_ray.parameters is not None and local.parameters is not None
    # The local runtime runs every chunk on its home worker: the oracle without stealing.
    assert np.array_equal(on_ray.parameters["w"], local.parameters["w"])
    assert [r.succeeded for r in on_ray.history] == [16, 16]


def test_chunks_split_each_workers_clients_in_order():
    chunks = make_chunks([(0, list("abcdefg")), (1, ["x"])], per_worker=3)
    assert [(c.home, c.node_ids) for c in chunks] == [
        (0, ["a", "b", "c"]),
        (0, ["d", "e"]),
        (0, ["f", "g"]),
        (1, ["x"]),
    ]


def test_chunks_come_back_in_chunk_order_and_unstealable_ones_stay_home():
    backend = LocalBackend()
    chunks = [Chunk(0, [f"a{i}"], stealable=False) for i in range(4)] + [Chunk(1, ["b"])]
    ran: list[tuple[int, str]] = []

    def submit(worker: int, chunk: Chunk):
        ran.append((worker, chunk.node_ids[0]))
        outcome = Outcome(chunk.node_ids[0])
        return backend_future(outcome)

    outcomes = run_chunks(backend, chunks, submit, depth=1)
    assert [o.value for o in outcomes] == ["a0", "a1", "a2", "a3", "b"]
    assert all(worker == 0 for worker, name in ran if name.startswith("a"))


def backend_future(outcome: Outcome):
    from concurrent.futures import Future

    future: Future[object] = Future()
    future.set_result(outcome.value)
    return future
