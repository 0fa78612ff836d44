"""The runtime protocol: typed requests from the driver to workers, typed replies back.

Every call to a worker is a frozen dataclass that subclasses :class:`Request` with its reply
type, e.g. ``class FitSegments(Request[FitBatch])``. The driver sends it with one verb,
``backend.call(worker, request)``, which returns a :class:`Pending` of that reply type;
``backend.gather`` and ``backend.wait_any`` turn pending calls into :class:`Outcome` s. On
the worker, a host (:class:`~redfl.runtime.host.Host`) looks the request's class up in its
:class:`Handlers` table and calls the handler a :class:`Runner` registered for it. mypy
checks both ends: the driver gets ``Outcome[FitBatch]`` for a ``FitSegments``, and a runner
cannot register a handler whose reply type differs from the one its request declares.

A request that blocks until other requests arrive (a node's message-driven ``train()``)
sets ``blocking = True``: the in-process runtime then runs it on a thread of its own.

Adding a programming model (a schema with a new way of running nodes) takes one module:

1. a :class:`Runner` subclass whose ``register`` adds a handler per request (``__init__``
   gets the worker's host as a :class:`NodeHost`: nodes, client states, versions, mailbox);
2. its requests, frozen dataclasses subclassing ``Request[Reply]`` with
   ``runner = TheRunner`` (and ``blocking = True`` for a request that waits on others).

A host installs the runner the first time one of its requests arrives (or up front, when
listed in ``Plan.runners``); the host, the backends and the other runners do not change.
Runners see their host only through :class:`NodeHost`, so they never import the host
module (which imports the runners it installs by default).

Examples
--------
>>> from dataclasses import dataclass
>>> from redfl.runtime.host import Host
>>> from redfl.runtime.topology_manager import TopologyManager
>>> class PingRunner(Runner):
...     def register(self, handlers: Handlers) -> None:
...         handlers.add(Ping, self.ping)
...     def ping(self, request: Ping) -> str:
...         return f"worker {self.host.index}: {request.text}"
>>> @dataclass(frozen=True)
... class Ping(Request[str]):
...     runner = PingRunner
...     text: str
>>> host = Host(0, "fed", 0, 0, [], TopologyManager(None, {}))
>>> host.handle(Ping("hi"))
'worker 0: hi'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

from redfl.core.message import Message
from redfl.nodes.node import FederatedNode, NodePort
from redfl.runtime.mailbox import Mailbox
from redfl.runtime.state import StateStore
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.virtual import VirtualNode

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
Q = TypeVar("Q", bound="Request[Any]")

Version = tuple[int, dict[str, Any]]
"""A node's published ``(version number, state)``; ``(0, {})`` before its first."""


@dataclass(frozen=True)
class Request(Generic[R]):
    """A call to a worker whose reply is an ``R``; subclasses are frozen dataclasses.

    Attributes
    ----------
    runner:
        The runner that handles the request (``None``: the host itself). A host that has
        not installed it yet does so on first use.
    blocking:
        Whether handling waits on other requests (then run on a thread of its own).
    """

    runner: ClassVar[type[Runner] | None] = None
    blocking: ClassVar[bool] = False


class Handlers:
    """A worker's table from request class to the handler that answers it."""

    def __init__(self) -> None:
        self._table: dict[type[Request[Any]], Callable[[Any], Any]] = {}

    def add(self, kind: type[Request[R]], handler: Callable[[Q], R]) -> None:
        """Answer requests of class ``kind`` with ``handler`` (its reply type must match).

        Raises
        ------
        ValueError
            If another handler already answers ``kind``.
        TypeError
            If ``handler`` is annotated to take another request class (mypy checks the
            reply type; this checks the argument).
        """
        taken = _first_annotation(handler)
        if taken is not None and taken not in (kind, kind.__name__):
            name = getattr(taken, "__name__", taken)
            raise TypeError(f"handler {handler!r} takes {name}, not {kind.__name__}")
        if kind in self._table:
            raise ValueError(f"a handler for {kind.__name__} is already registered")
        self._table[kind] = handler

    def find(self, request: Request[R]) -> Callable[[Request[R]], R] | None:
        """The handler of ``request``'s class, or ``None``."""
        return cast("Callable[[Request[R]], R] | None", self._table.get(type(request)))

    def kinds(self) -> list[str]:
        """The names of the request classes answered (for error messages)."""
        return sorted(kind.__name__ for kind in self._table)


def _first_annotation(handler: Callable[..., Any]) -> Any:
    """The annotation of ``handler``'s first parameter (a class or a string), or ``None``."""
    try:
        parameters = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return None
    if not parameters or parameters[0].annotation is inspect.Parameter.empty:
        return None
    annotation = parameters[0].annotation
    return annotation.strip("'\"") if isinstance(annotation, str) else annotation


class NodeHost(Protocol):
    """What a :class:`Runner` uses of its worker's host (:class:`~redfl.runtime.host.Host`
    and its Ray variant are ones): nodes, placement, client states, versions, mailbox."""

    index: int
    """The worker's position in the placement."""
    manager: TopologyManager
    """The topology and the placement of every node."""
    states: StateStore
    """The states of this worker's stateful clients."""
    mailbox: Mailbox
    """The queues of messages for this worker's nodes."""
    port: NodePort | None
    """How built nodes reach the federation (set by the message port runner)."""
    running: tuple[str, float] | None
    """The client a runner runs now and since when (``time.monotonic()``)."""
    piece: tuple[int, float] | None
    """The piece of the running request a runner folds now (its position among the
    request's subtrees) and since when (``time.monotonic()``)."""

    def handle(self, request: Request[R]) -> R:
        """Answer ``request`` on this worker (as if it had come from the driver)."""
        ...

    def node(self, node_id: str) -> FederatedNode:
        """The live node (or guest) ``node_id``, built on first use."""
        ...

    def built(self, node_id: str) -> FederatedNode | None:
        """The live node or guest ``node_id`` if built, without building it."""
        ...

    def node_ids(self) -> list[str]:
        """The ids of the nodes that live on this worker."""
        ...

    def add_guests(self, guests: Sequence[VirtualNode]) -> None:
        """Describe clients of other workers that this one will run for them."""
        ...

    def post(self, message: Message, groups: dict[int, list[str]]) -> None:
        """Hand ``message`` to other workers (worker index -> recipient ids there)."""
        ...

    def version(self, node_id: str) -> Version:
        """The latest (version, state) of ``node_id``; (0, {}) if none."""
        ...

    def publish_version(self, node_id: str, state: dict[str, Any]) -> int:
        """Store a snapshot of ``node_id``'s state under the next version number."""
        ...

    def quiesce(self, timeout: float) -> bool:
        """Deliver every message still queued for other workers; ``False`` if ``timeout``
        passed first."""
        ...

    def rewind(self, versions: dict[str, Version]) -> None:
        """Forget every message and live node; take ``versions`` as the published ones."""
        ...


class Runner:
    """One programming model on a worker: registers handlers for its requests.

    Parameters
    ----------
    host:
        The worker's node host (nodes, placement, client state, versions, mailbox).
    """

    def __init__(self, host: NodeHost) -> None:
        self.host = host

    def register(self, handlers: Handlers) -> None:
        """Add a handler for each request this runner answers."""

    def stats(self) -> dict[str, float]:
        """Counters for :class:`~redfl.runtime.host.Stats` (merged with the host's)."""
        return {}

    def close(self) -> None:
        """Release what the runner holds (the worker is being stopped)."""


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """The reply a worker call returned, or the error it raised."""

    value: R | None = None
    error: BaseException | None = None

    def result(self) -> R:
        """The reply; raises the call's error if it failed."""
        if self.error is not None:
            raise self.error
        return cast(R, self.value)


@dataclass(frozen=True, eq=False)
class Pending(Generic[R_co]):
    """A call in flight whose reply will be an ``R`` (a future or a Ray object reference).

    Covariant: a call whose reply is a subclass of ``R`` is a ``Pending[R]``."""

    handle: Any


class Unfinished(RuntimeError):
    """A call that was still running when ``gather`` returned (at a first error with
    ``fail_fast``, or at its ``timeout``)."""
