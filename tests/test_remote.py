"""Tests for the ``remote`` decorator and the dedicated nodes it gives (planning only)."""

from __future__ import annotations

from typing import Any

import pytest

from redfl.nodes import FederatedNode
from redfl.runtime.plan import make_plan
from redfl.runtime.remote import DEFAULT_MAX_CONCURRENCY, remote, remote_options
from redfl.runtime.resources import ResourcesConfig
from redfl.schemas import GraphFederation, virtual_nodes
from redfl.topology import builders


class Plain(FederatedNode):
    def train(self) -> Any:
        return f"plain {self.node_id}"


def test_default_max_concurrency_is_100() -> None:
    assert DEFAULT_MAX_CONCURRENCY == 100

    @remote
    class Bare(FederatedNode):
        pass

    assert remote_options(Bare) == {"max_concurrency": 100}

    @remote()
    class Called(FederatedNode):
        pass

    assert remote_options(Called) == {"max_concurrency": 100}


def test_options_are_recorded() -> None:
    @remote(num_cpus=0.5, num_gpus=0.25, max_concurrency=8, runtime_env={"env_vars": {}})
    class Heavy(FederatedNode):
        pass

    assert remote_options(Heavy) == {
        "num_cpus": 0.5,
        "num_gpus": 0.25,
        "max_concurrency": 8,
        "runtime_env": {"env_vars": {}},
    }


def test_class_is_returned_unchanged_and_still_usable() -> None:
    class Node(FederatedNode):
        def double(self, x: int) -> int:
            return 2 * x

    decorated = remote(num_cpus=1)(Node)
    assert decorated is Node
    assert decorated.__name__ == "Node"
    assert issubclass(decorated, FederatedNode)
    assert decorated().double(21) == 42


def test_undecorated_class_has_no_options() -> None:
    assert remote_options(Plain) is None


def test_remote_options_returns_a_copy() -> None:
    @remote(num_cpus=1)
    class Node(FederatedNode):
        pass

    options = remote_options(Node)
    assert options is not None
    options["num_cpus"] = 99
    assert remote_options(Node) == {"num_cpus": 1, "max_concurrency": 100}


@pytest.mark.parametrize("value", [1, 0, -3, 2.5, "8", None])
def test_bad_max_concurrency_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="max_concurrency") as info:
        remote(max_concurrency=value)
    assert repr(value) in str(info.value)


def test_max_concurrency_two_is_the_minimum_allowed() -> None:
    @remote(max_concurrency=2)
    class Node(FederatedNode):
        pass

    assert remote_options(Node) == {"max_concurrency": 2}


@pytest.mark.parametrize(
    ("key", "value"), [("num_cpus", -1), ("num_gpus", -0.5), ("num_gpus", "1")]
)
def test_bad_cpu_or_gpu_amount_is_refused(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=key):
        remote(**{key: value})


def test_virtual_nodes_of_a_remote_class_are_dedicated_with_its_resources() -> None:
    @remote(num_cpus=2, num_gpus=0.5)
    class Heavy(FederatedNode):
        pass

    nodes = virtual_nodes(Heavy, ["h0", "h1"])
    assert [n.node_id for n in nodes] == ["h0", "h1"]
    for node in nodes:
        assert node.dedicated
        assert node.resources == {"CPU": 2.0, "GPU": 0.5}


def test_remote_class_without_amounts_asks_for_zero() -> None:
    @remote
    class Light(FederatedNode):
        pass

    (node,) = virtual_nodes(Light, ["l"])
    assert node.dedicated
    assert node.resources == {"CPU": 0.0, "GPU": 0.0}


def test_explicit_resources_override_the_decorator() -> None:
    @remote(num_cpus=2)
    class Heavy(FederatedNode):
        pass

    (node,) = virtual_nodes(Heavy, ["h"], resources={"CPU": 1, "GPU": 1})
    assert node.resources == {"CPU": 1, "GPU": 1}


def test_plain_class_nodes_are_shared() -> None:
    assert not any(node.dedicated for node in virtual_nodes(Plain, ["a", "b"]))


def test_plan_gives_each_remote_node_its_own_named_worker() -> None:
    @remote(num_cpus=2, num_gpus=0.5, max_concurrency=7)
    class Heavy(FederatedNode):
        pass

    nodes = virtual_nodes(Plain, ["p0", "p1", "p2"]) + virtual_nodes(Heavy, ["h0", "h1"], start=3)
    plan = make_plan(
        "fed",
        0,
        nodes,
        builders.mesh([n.node_id for n in nodes]),
        ResourcesConfig(num_workers=2),
        {"CPU": 8.0, "GPU": 1.0},
        [{"CPU": 8.0, "GPU": 1.0}],
    )
    assert plan.num_nodes == 5
    shared, dedicated = plan.workers[:2], plan.workers[2:]
    assert sorted(n.node_id for w in shared for n in w.nodes) == ["p0", "p1", "p2"]
    assert [w.name for w in dedicated] == ["fed/h0", "fed/h1"]
    for worker, node_id in zip(dedicated, ("h0", "h1"), strict=True):
        assert [n.node_id for n in worker.nodes] == [node_id]
        assert worker.bundle == {"CPU": 2.0, "GPU": 0.5}
        assert worker.options["max_concurrency"] == 7
        assert plan.manager.worker_of(node_id) == plan.workers.index(worker)


def test_remote_nodes_run_in_process_on_the_local_runtime() -> None:
    @remote(num_cpus=1)
    class Greeter(FederatedNode):
        def train(self) -> Any:
            self.send("hi", self.node_id)
            message = self.receive("hi", timeout=10)
            assert message is not None
            return message.body

    ids = ["g0", "g1"]
    federation = GraphFederation(virtual_nodes(Greeter, ids), builders.mesh(ids), runtime="local")
    with federation:
        result = federation.train()
        assert result.outputs == {"g0": "g1", "g1": "g0"}
        assert federation.worker_of("g0") != federation.worker_of("g1")
