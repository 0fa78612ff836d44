"""``FederatedNode``: the base class of every node a user writes.

A node is plain Python: it does not know whether it runs in-process (``local`` runtime) or
inside a Ray worker. The runtime binds it to a :class:`NodeContext` (its id, roles,
federation) and a :class:`NodePort` (how its messages travel) before calling ``setup()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from redfl.core.message import Message
from redfl.core.roles import Role


@dataclass(frozen=True)
class NodeContext:
    """Who a live node is: its id, roles, position and federation."""

    node_id: str
    roles: frozenset[Role]
    federation_id: str
    seed: int
    index: int
    num_nodes: int


class NodePort(Protocol):
    """How a live node reaches the rest of the federation (provided by the runtime)."""

    def neighbours(self, node_id: str) -> set[str]:
        """The nodes ``node_id`` may send to."""
        ...

    def senders(self, node_id: str) -> set[str]:
        """The nodes that may send to ``node_id``."""
        ...

    def weights_into(self, node_id: str) -> dict[str, float]:
        """The weights of the edges into ``node_id``, by sender (empty when unweighted)."""
        ...

    def send(self, message: Message) -> None:
        """Deliver ``message`` to its recipients (checked against the topology)."""
        ...

    def receive(
        self, node_id: str, header: str | None, block: bool, timeout: float | None
    ) -> Message | None:
        """Take the first message for ``node_id`` matching ``header``."""
        ...

    def publish_version(self, node_id: str, state: dict[str, Any]) -> int:
        """Store a snapshot of ``node_id``'s state; return its version number."""
        ...

    def report_round(self, node_id: str, rnd: int, metrics: dict[str, float]) -> None:
        """Add ``node_id``'s metrics of round ``rnd`` to the federation's history."""
        ...

    def may_start_round(self, node_id: str, rnd: int) -> bool:
        """Whether ``node_id`` may start round ``rnd`` (``False``: the run stops before it)."""
        ...


class FederatedNode:
    """A participant of a federation.

    Subclass it, put heavy initialisation (data loading, model building) in
    :meth:`setup`, which runs where the node lives, and write the node's protocol in
    :meth:`train` using :meth:`send` and :meth:`receive`.

    Examples
    --------
    >>> class Echo(FederatedNode):
    ...     def train(self) -> object:
    ...         self.send("hello", body=self.node_id)
    ...         return self.receive("hello", timeout=10).body
    """

    _context: NodeContext | None = None
    _port: NodePort | None = None
    _version: int = 0

    def bind(self, context: NodeContext, port: NodePort | None) -> None:
        """Attach the node to its federation (called by the runtime, once)."""
        self._context = context
        self._port = port

    @property
    def context(self) -> NodeContext:
        """The node's identity; available from ``setup()`` on."""
        if self._context is None:
            raise RuntimeError("node is not bound to a federation yet")
        return self._context

    @property
    def node_id(self) -> str:
        """The node's id."""
        return self.context.node_id

    @property
    def roles(self) -> frozenset[Role]:
        """The node's roles (a subset of ``train``, ``eval``, ``test``)."""
        return self.context.roles

    @property
    def version(self) -> int:
        """The node's round/version counter (bumped by :meth:`update_version`)."""
        return self._version

    def setup(self) -> None:
        """Heavy initialisation; runs once, where the node lives, before first use."""

    def train(self) -> Any:
        """The node's protocol for message-driven federations; returns its output."""
        return None

    def test(self, phase: str) -> dict[str, float]:
        """Evaluate the node for ``phase`` (e.g. ``"test"``); returns metrics."""
        return {}

    @property
    def neighbours(self) -> set[str]:
        """The ids this node may send to."""
        return self._require_port().neighbours(self.node_id)

    @property
    def senders(self) -> set[str]:
        """The ids that may send to this node (equal to :attr:`neighbours` when undirected)."""
        return self._require_port().senders(self.node_id)

    @property
    def weights_into(self) -> dict[str, float]:
        """The topology's weights of the edges into this node (empty when unweighted)."""
        return self._require_port().weights_into(self.node_id)

    def send(self, header: str, body: Any = None, to: str | Iterable[str] | None = None) -> None:
        """Send ``body`` under ``header`` to ``to`` (default: every neighbour).

        Raises
        ------
        ValueError
            If a recipient is not a neighbour of this node in the topology.
        """
        port = self._require_port()
        if to is None:
            recipients = tuple(sorted(port.neighbours(self.node_id)))
        elif isinstance(to, str):
            recipients = (to,)
        else:
            recipients = tuple(to)
        message = Message(header, self.node_id, recipients, body, self._version)
        port.send(message)

    def receive(
        self, header: str | None = None, block: bool = True, timeout: float | None = None
    ) -> Message | None:
        """Take the oldest message (with ``header``, if given); others stay queued.

        Returns ``None`` when ``block`` is false and nothing matches.

        Raises
        ------
        TimeoutError
            If ``timeout`` seconds pass with no matching message.
        """
        return self._require_port().receive(self.node_id, header, block, timeout)

    def update_version(self, **state: Any) -> int:
        """Publish a snapshot of ``state``; the driver reads it with ``pull_version``."""
        self._version = self._require_port().publish_version(self.node_id, dict(state))
        return self._version

    def report_round(self, rnd: int, metrics: dict[str, float]) -> None:
        """Add this node's metrics of round ``rnd`` to the history (``time``: when it ended).

        The driver's round record averages each metric over the nodes that reported it.
        """
        self._require_port().report_round(self.node_id, rnd, metrics)

    def may_start_round(self, rnd: int) -> bool:
        """Whether this node may start round ``rnd``: ``False`` when the federation stops
        before it (cancellation, early stop); may wait while a checkpoint is taken."""
        return self._require_port().may_start_round(self.node_id, rnd)

    def _require_port(self) -> NodePort:
        if self._port is None:
            raise RuntimeError("node is not bound to a federation yet")
        return self._port
