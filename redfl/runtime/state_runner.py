"""Moving stateful clients' states between workers and checkpoints.

A checkpoint of a star run must hold what stateful clients keep on their workers
(:class:`~redfl.runtime.state.StateStore`), or a resumed run would not continue where the
interrupted one was. :class:`ExportClientStates` reads every state a worker keeps (spilled
ones too) and :class:`ImportClientStates` puts states back, on the worker that hosts the
client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from redfl.runtime.protocol import Handlers, Request, Runner

ClientStates = dict[str, dict[str, np.ndarray]]
"""Client id -> that client's named arrays."""


class ClientStateRunner(Runner):
    """Answers the client-state requests from the host's state store."""

    def register(self, handlers: Handlers) -> None:
        """Answer :class:`ExportClientStates` and :class:`ImportClientStates`."""
        handlers.add(ExportClientStates, self.export)
        handlers.add(ImportClientStates, self.restore)

    def export(self, request: ExportClientStates) -> ClientStates:
        """Every kept state (read back from disk where spilled, and spilled again)."""
        store = self.host.states
        return {node_id: dict(store.get(node_id)) for node_id in store.ids()}

    def restore(self, request: ImportClientStates) -> int:
        """Keep each given state for its client; the number kept."""
        for node_id, state in request.states.items():
            self.host.states.put(node_id, state)
        return len(request.states)


@dataclass(frozen=True)
class ExportClientStates(Request[ClientStates]):
    """Every client state the worker keeps."""

    runner = ClientStateRunner


@dataclass(frozen=True)
class ImportClientStates(Request[int]):
    """Keep these client states on the worker (-> how many)."""

    runner = ClientStateRunner

    states: Mapping[str, Mapping[str, np.ndarray]]
