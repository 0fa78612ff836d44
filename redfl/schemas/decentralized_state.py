"""A decentralised federation's :class:`~redfl.core.server_state.ServerState`.

Nodes of a decentralised schema run their rounds without a global barrier; a checkpoint
after round ``k`` is taken while every node waits at its worker's round gate before round
``k + 1`` (:class:`~redfl.runtime.round_gate.RoundGate`), so the models the nodes last
published are all of round ``k``. They go into ``extra["node_models"]``; a federation
built from the same config that loads the state has each node continue from its model
after round ``k`` (its exchanges, e.g. the degrees for mixing weights, are redone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redfl.core.arrays import copy_parameters
from redfl.core.server_state import ServerState
from redfl.runtime.port_runner import NodeModels, RestoreNodes

if TYPE_CHECKING:
    from redfl.runtime.backend import Backend
    from redfl.schemas.decentralized import DecentralizedFederation

NODE_MODELS = "node_models"
"""The key of the nodes' models in ``ServerState.extra``."""


def take_state(federation: DecentralizedFederation, config_digest: str = "") -> ServerState:
    """The federation's state after its last completed round (nodes at the gate)."""
    backend = federation._start()
    models: dict[str, Any] = {}
    groups = federation.groups()
    pending = [backend.call(worker, NodeModels(ids)) for worker, ids in groups]
    for outcome in backend.gather(pending):
        models.update(outcome.result())
    parameters = federation.final_parameters() or {}
    return ServerState(
        federation.round,
        copy_parameters(parameters),
        {},
        federation.history,
        [],
        federation.seed,
        config_digest,
        {NODE_MODELS: dict(sorted(models.items()))},
    )


def restore_nodes(
    backend: Backend, groups: list[tuple[int, list[str]]], state: ServerState
) -> None:
    """Have every node of ``groups`` continue from its model in ``state``."""
    models = state.extra.get(NODE_MODELS) or {}
    pending = [
        backend.call(worker, RestoreNodes(state.round, {i: models[i] for i in ids if i in models}))
        for worker, ids in groups
    ]
    for outcome in backend.gather(pending):
        outcome.result()
