"""Secure aggregation on real Ray: the same model as in-process, masks made where the
clients run (never on the driver), and an honest client's refusal relayed by its worker."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import ray
from waiting import wait_until

from redfl import FedAvg, StarFederation
from redfl.core.events import Event, SecureAggregationStage
from redfl.core.instructions import Instructions
from redfl.core.result import FederationError
from redfl.examples.echo import JitterClient
from redfl.privacy import secagg
from redfl.privacy.secagg import SecAggServer, SecureAggregationConfig, UnmaskRequest
from redfl.runtime.host import Probe
from redfl.runtime.resources import ResourcesConfig
from redfl.runtime.secagg_runner import MaskInputs, SecureFit, SecureFitBatch, ShareKeys, Unmask
from redfl.schemas.callbacks import Callback
from redfl.schemas.hierarchical import HierarchicalFederation
from redfl.topology import relay_tree


def star(runtime: str, clients: int = 12, workers: int = 3) -> StarFederation:
    return StarFederation(
        JitterClient,
        clients,
        initial_parameters=JitterClient.initial_parameters(300),
        strategy=FedAvg(fraction_fit=0.75, min_fit_clients=2),
        options={"size": 300},
        secure_aggregation=SecureAggregationConfig(),
        seed=7,
        runtime=runtime,
        resources=ResourcesConfig(num_workers=workers, worker={"CPU": 0.5}),
    )


def test_ray_gives_the_local_model_and_keys_are_made_on_the_workers(ray_session, monkeypatch):
    with star("local") as fed:
        local = fed.train(3)

    def refuse(*args, **kwargs):
        raise AssertionError("the driver made a SecAggClient (it would hold private keys)")

    # The driver process may not make a protocol client: any attempt fails the round.
    monkeypatch.setattr(secagg.SecAggClient, "__init__", refuse)
    with star("ray") as fed:
        remote = fed.train(3)
        stats = fed.worker_stats()
        pids = {o.result().pid for o in fed._start().call_all(Probe())}
    assert not remote.failures, remote.failures
    assert local.parameters_equal(remote)
    assert [r.metrics["secagg/survivors"] for r in remote.history] == [9.0, 9.0, 9.0]
    # 9 clients a round, 3 rounds: each protocol client was made on a worker process.
    assert sum(s["secagg_clients"] for s in stats) == 27
    assert sum(s["secagg_held"] for s in stats) == 0
    assert os.getpid() not in pids and len(pids) == 3


def test_an_honest_client_refuses_both_shares_of_one_neighbour_through_its_worker(ray_session):
    fed = star("ray", clients=5, workers=1)
    with fed:
        backend = fed._start()
        node_ids = fed.train_ids
        ids = {node_id: i for i, node_id in enumerate(node_ids)}
        assert fed.secure is not None
        config = fed.secure.config(list(ids.values()), fed.parameters, 1)
        request = SecureFit(
            backend.put(fed.parameters),
            [node_ids],
            Instructions.make(1),
            False,
            secagg=config,
            table=fed.secure.table,
            ids=ids,
        )
        batch = backend.gather([backend.call(0, request)])[0].result()
        assert isinstance(batch, SecureFitBatch)
        assert not hasattr(batch.adverts[0], "private") and len(batch.adverts) == 5
        server = SecAggServer(config)
        keys = server.collect_keys(batch.adverts)
        bundles = backend.gather([backend.call(0, ShareKeys(1, keys))])[0].result()
        routed = server.collect_shares(bundles.messages.values())
        masked = backend.gather([backend.call(0, MaskInputs(1, routed))])[0].result()
        assert masked.masked is not None and masked.masked.clients == (0, 1, 2, 3, 4)
        server.collect_masked([masked.masked])
        # A server that says client 1 both survived and dropped, to get both its secrets.
        greedy = {
            0: UnmaskRequest(1, 0, frozenset({1, 2}), frozenset({1}), 5),
            2: UnmaskRequest(1, 2, frozenset({1, 3}), frozenset(), 5),
        }
        reply = backend.gather([backend.call(0, Unmask(1, greedy))])[0].result()
    assert set(reply.messages) == {2}
    assert "refuses to unmask" in reply.failed[0]
    assert (
        "both the self-mask seed share and the mask key share of client(s) [1]" in (reply.failed[0])
    )
    assert np.array_equal(sorted(reply.messages[2].seed_shares), [1, 3])


@pytest.mark.parametrize("stage", ["masked_input", "unmasking"])
def test_dropouts_on_ray_leave_the_sum_of_the_clients_whose_input_arrived(ray_session, stage):
    fed = star("ray", clients=20, workers=2)
    fed.strategy = FedAvg(min_fit_clients=2)
    assert fed.secure is not None
    silent = frozenset({"client-4", "client-5"})
    fed.secure.silent = {stage: silent}
    with fed:
        result = fed.train(1)
    assert result.history[0].metrics["secagg/survivors"] == (18 if stage == "masked_input" else 20)
    assert {f.node_id for f in result.failures} == (silent if stage == "masked_input" else set())


def test_a_hierarchy_on_ray_sums_each_lcp_securely_as_in_process(ray_session):
    def hierarchy(runtime: str) -> HierarchicalFederation:
        return HierarchicalFederation(
            JitterClient,
            16,
            initial_parameters=JitterClient.initial_parameters(50),
            options={"size": 50},
            tree=relay_tree(1, 2, 2),
            secure_aggregation=SecureAggregationConfig(),
            runtime=runtime,
            resources=ResourcesConfig(num_workers=2, worker={"CPU": 0.5}),
        )

    with hierarchy("local") as fed:
        local = fed.train(2)
    with hierarchy("ray") as fed:
        remote = fed.train(2)
        stats = fed.worker_stats()
    assert not remote.failures
    assert local.parameters_equal(remote)
    assert sum(s["tree_units"] for s in stats) == 2 * 2


class KillAfter(Callback):
    """Ends worker 1's actor for good once ``stage`` has been collected, and waits until
    Ray says it is dead, so the next stage's call to it fails whatever the timing (a kill
    still on its way could otherwise let that call run first)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.federation: StarFederation | None = None

    def on_event(self, event: Event) -> bool | None:
        if isinstance(event, SecureAggregationStage) and event.stage == self.stage:
            assert self.federation is not None
            actor = self.federation._start()._actors[1]  # type: ignore[attr-defined]
            ray.kill(actor, no_restart=True)
            assert wait_until(lambda: _dead(actor), 60.0), "worker 1 did not die"
        return None


def _dead(actor: Any) -> bool:
    """Whether Ray reports ``actor`` dead."""
    try:
        ray.get(actor.__ray_ready__.remote(), timeout=5.0)
    except ray.exceptions.RayActorError:
        return True
    except ray.exceptions.GetTimeoutError:
        return False
    return False


def test_a_worker_lost_between_stages_drops_its_clients_and_fails_the_round_clearly(
    ray_session,
):
    killer = KillAfter("share_keys")
    fed = star("ray", clients=20, workers=2)
    fed.strategy = FedAvg(min_fit_clients=2)
    fed._stealable = False  # each worker fits (and so holds) its own 10 clients
    fed.callbacks.append(killer)
    killer.federation = fed
    with fed, pytest.raises(FederationError) as caught:
        fed.train(1)
    text = str(caught.value)
    assert "round 1" in text and "failed at stage masked_input" in text
    assert "nothing was revealed" in text
    lost = [f for f in caught.value.failures if "masked_input: worker 1 lost" in f.reason]
    assert len(lost) == 10
