"""A star federation's :class:`~redfl.core.server_state.ServerState`: take it, load it.

The state holds the round, the global parameters, the strategy's state (wrappers
included), history, failures and, in ``extra["client_states"]``, what stateful clients
keep on their workers; loading it into a federation built from the same config continues
the run exactly where the state was taken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redfl.core.arrays import copy_parameters
from redfl.core.server_state import ServerState
from redfl.runtime.state_runner import ExportClientStates, ImportClientStates

if TYPE_CHECKING:
    from redfl.schemas.star import StarFederation

CLIENT_STATES = "client_states"
"""The key of stateful clients' states in ``ServerState.extra``."""


def take_state(federation: StarFederation, config_digest: str = "") -> ServerState:
    """The federation's state now (between rounds)."""
    extra = {}
    if federation._stateful and federation.started:
        backend = federation._start()
        states: dict[str, object] = {}
        for outcome in backend.call_all(ExportClientStates()):
            states.update(outcome.result())
        extra[CLIENT_STATES] = dict(sorted(states.items()))
    return ServerState(
        federation.round,
        copy_parameters(federation.parameters),
        federation.strategy.state(),
        federation.history,
        list(federation.failures),
        federation.seed,
        config_digest,
        extra,
    )


def load_state(federation: StarFederation, state: ServerState) -> None:
    """Continue from ``state``: round, parameters, strategy, history, client states.

    Raises
    ------
    ValueError
        If the state was taken with another seed or with other parameter names.
    """
    if state.seed != federation.seed:
        raise ValueError(f"the state's seed is {state.seed}, the federation's {federation.seed}")
    if sorted(state.parameters) != sorted(federation.parameters):
        raise ValueError(
            f"the state's parameters are {sorted(state.parameters)}, the federation's "
            f"{sorted(federation.parameters)}"
        )
    federation.round = state.round
    federation.parameters = copy_parameters(state.parameters)
    federation.strategy.load_state(state.strategy_state)
    federation._history, federation._failures = list(state.history), list(state.failures)
    states = state.extra.get(CLIENT_STATES) or {}
    if states:
        backend = federation._start()
        by_worker: dict[int, dict[str, object]] = {}
        for node_id, arrays in states.items():
            by_worker.setdefault(federation.worker_of(node_id), {})[node_id] = arrays
        pending = [
            backend.call(worker, ImportClientStates(group))  # type: ignore[arg-type]
            for worker, group in sorted(by_worker.items())
        ]
        for outcome in backend.gather(pending):
            outcome.result()
