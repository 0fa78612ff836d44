"""A decentralised federation's :class:`~redfl.core.server_state.ServerState`.

Nodes of a decentralised schema run their rounds without a global barrier; a checkpoint
after round ``k`` is taken while every node waits at its worker's round gate before round
``k + 1`` (:class:`~redfl.runtime.round_gate.RoundGate`), so the states the nodes published
for round ``k`` (round, parameters, weight and their extra state) are all there. They go
into ``extra["node_states"]``; a federation built from the same config that loads the state
resumes each node from its own (``train(rounds, resume=state)``, the path a rollback after a
worker loss takes too: :mod:`redfl.schemas.rollback`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redfl.core.arrays import copy_parameters
from redfl.core.server_state import ServerState

if TYPE_CHECKING:
    from redfl.schemas.decentralized import DecentralizedFederation
    from redfl.schemas.rollback import Snapshot

NODE_STATES = "node_states"
"""The key of the nodes' published states in ``ServerState.extra``."""


def take_state(
    federation: DecentralizedFederation, snapshot: Snapshot, config_digest: str = ""
) -> ServerState:
    """The federation's state after its last completed round (nodes at the gate)."""
    if snapshot.round != federation.round:
        snapshot.take(federation._start(), federation.round, len(federation.train_ids))
    if snapshot.round != federation.round:
        raise RuntimeError(
            f"the nodes' states of round {federation.round} are not all published; "
            "a checkpoint is taken at a round boundary only"
        )
    parameters = federation.final_parameters() or {}
    return ServerState(
        federation.round,
        copy_parameters(parameters),
        {},
        federation.history,
        [],
        federation.seed,
        config_digest,
        {NODE_STATES: dict(sorted(snapshot.states.items()))},
    )
