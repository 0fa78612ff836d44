"""A whole secure aggregation round in one process: the server and every client object,
with the messages handed over directly. For tests, benchmarks and single-process runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

import numpy as np

from redfl.privacy.secagg.client import SecAggClient
from redfl.privacy.secagg.config import STAGES, SecAggConfig, Stage
from redfl.privacy.secagg.messages import KeyAdvertisement, SecAggResult
from redfl.privacy.secagg.server import SecAggServer

Update = tuple[Mapping[str, np.ndarray], float]
"""A client's input: its parameters (or update) and its weight."""

_T = TypeVar("_T")
_R = TypeVar("_R")


class LocalRound:
    """One round run in-process.

    Attributes
    ----------
    clients:
        The client objects, made in the first stage.
    seconds:
        For each stage, ``{"clients": ..., "server": ...}``: the seconds spent in all
        client calls together and in the server's call.
    """

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self.server = SecAggServer(config)
        self.clients: dict[int, SecAggClient] = {}
        self.seconds: dict[Stage, dict[str, float]] = {
            stage: {"clients": 0.0, "server": 0.0} for stage in STAGES
        }

    def run(
        self,
        updates: Mapping[int, Update],
        drop: Mapping[Stage, Collection[int]] | None = None,
    ) -> SecAggResult:
        """Run the four stages; ``drop[stage]`` are clients that send nothing from that
        stage on (dropped before it).

        Raises
        ------
        RoundFailed
            If too many clients drop (see :class:`~redfl.privacy.secagg.server.SecAggServer`).
        """
        drop = drop or {}
        alive = set(self.config.clients)
        server = self.server

        def stage_of(name: Stage, call: Callable[[int], _T]) -> list[_T]:
            alive.difference_update(drop.get(name, ()))
            return self._clients(name, sorted(alive), call)

        adverts = stage_of("advertise_keys", self._advertise)
        keys = self._server("advertise_keys", server.collect_keys, adverts)
        bundles = stage_of("share_keys", lambda c: self.clients[c].share_keys(keys[c]))
        routed = self._server("share_keys", server.collect_shares, bundles)
        masked = stage_of(
            "masked_input", lambda c: self.clients[c].mask_input(routed[c], *updates[c])
        )
        requests = self._server("masked_input", server.collect_masked, masked)
        replies = stage_of("unmasking", lambda c: self.clients[c].unmask(requests[c]))
        return self._server("unmasking", server.collect_unmask, replies)

    def _advertise(self, client: int) -> KeyAdvertisement:
        """Make the client (its keys and seed are drawn then) and advertise its keys."""
        self.clients[client] = SecAggClient(self.config, client)
        return self.clients[client].advertise_keys()

    def _clients(self, stage: Stage, clients: list[int], call: Callable[[int], _T]) -> list[_T]:
        start = time.perf_counter()
        out = [call(client) for client in clients]
        self.seconds[stage]["clients"] += time.perf_counter() - start
        return out

    def _server(self, stage: Stage, call: Callable[[list[_T]], _R], messages: list[_T]) -> _R:
        start = time.perf_counter()
        out = call(messages)
        self.seconds[stage]["server"] += time.perf_counter() - start
        return out
