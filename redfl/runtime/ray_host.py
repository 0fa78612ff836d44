"""The Ray actor of a worker: one entry, ``handle(request)``, around a :class:`RayHost`.

A :class:`RayHost` is a :class:`~redfl.runtime.host.Host` whose messages to other workers
travel in batches through an outbox (:mod:`redfl.runtime.outbox`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import ray

from redfl.core.message import Message
from redfl.runtime.host import Host
from redfl.runtime.outbox import Outbox
from redfl.runtime.port_runner import DeliverBatch, pack
from redfl.runtime.protocol import R, Request


class RayHost(Host):
    """A :class:`Host` whose messages to other workers travel in batches (an outbox).

    A message is serialised once, when it is sent, whatever the number of destination
    workers; each destination's next :class:`DeliverBatch` carries the bytes.
    """

    _outbox: Outbox | None = None

    def post(self, message: Message, groups: dict[int, list[str]]) -> None:
        """Queue ``message`` for each destination worker (serialised once)."""
        if self._outbox is None:
            self._outbox = Outbox(self._send_batch)
        packed = pack(message)
        for worker, ids in groups.items():
            self._outbox.post(worker, (packed, ids))

    def quiesce(self, timeout: float) -> bool:
        """Flush the outbox, then drop it (a failed delivery leaves it unusable)."""
        outbox, self._outbox = self._outbox, None
        return outbox is None or outbox.flush(timeout)

    def _send_batch(self, worker: int, batch: list[Any]) -> None:
        ray.get(self.peers[worker].handle.remote(DeliverBatch(batch)))


class HostActor:
    """The Ray actor of a worker: one entry, :meth:`handle`, around a :class:`RayHost`."""

    def __init__(self, *args: Any) -> None:
        self._host = RayHost(*args)

    def node_id(self) -> str:
        """The id of the Ray node (machine) this worker runs on."""
        return str(ray.get_runtime_context().get_node_id())

    def handle(self, request: Request[R], names: Sequence[str] = (), *values: Any) -> R:
        """Answer ``request``; ``values`` (resolved by Ray) replace its fields ``names``."""
        if names:
            request = replace(request, **dict(zip(names, values, strict=True)))
        return self._host.handle(request)
