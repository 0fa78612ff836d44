"""The named decentralised schemas: ring, mesh, k-connect and custom graphs.

Each is a :class:`~redfl.schemas.decentralized.DecentralizedFederation` on a topology built
by :mod:`redfl.topology.builders`, with its ``[topology]`` table (the algorithm, and only the
keys its graph needs) and one builder for all four, registered in
:data:`~redfl.schemas.registry.SCHEMAS`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Unpack

from pydantic import AfterValidator, BaseModel, Field, model_validator

from redfl.core.config import SERVER_FILE, ConfigError
from redfl.nodes.algorithms import ALGORITHMS
from redfl.nodes.node import FederatedNode
from redfl.runtime.virtual import NodeFactory
from redfl.schemas.base import FederationSettings
from redfl.schemas.decentralized import DecentralizedFederation
from redfl.schemas.registry import SCHEMAS, FederationParts, SchemaSpec, TopologyTable
from redfl.topology import builders
from redfl.topology.graph import Topology
from redfl.topology.validate import TopologyError


class DecentralizedSettings(FederationSettings, total=False):
    """What the named schemas pass through to
    :class:`~redfl.schemas.decentralized.DecentralizedFederation`."""

    options: Mapping[str, Any] | None
    roles: str


class RingFederation(DecentralizedFederation):
    """Nodes on a ring (``directed=True``: each node sends to its successor only)."""

    def __init__(
        self,
        template: NodeFactory,
        nodes: builders.Nodes,
        *,
        directed: bool = False,
        **kw: Unpack[DecentralizedSettings],
    ) -> None:
        super().__init__(template, builders.ring(nodes, directed=directed), **kw)


class MeshFederation(DecentralizedFederation):
    """Nodes on the complete graph."""

    def __init__(
        self, template: NodeFactory, nodes: builders.Nodes, **kw: Unpack[DecentralizedSettings]
    ) -> None:
        super().__init__(template, builders.mesh(nodes), **kw)


class KConnectFederation(DecentralizedFederation):
    """Nodes on a connected random ``k``-regular graph (seeded by ``topology_seed``)."""

    def __init__(
        self,
        template: NodeFactory,
        nodes: builders.Nodes,
        k: int,
        *,
        topology_seed: int = 0,
        **kw: Unpack[DecentralizedSettings],
    ) -> None:
        super().__init__(template, builders.k_connect(nodes, k, seed=topology_seed), **kw)


class CustomFederation(DecentralizedFederation):
    """Nodes on a user-defined graph: a :class:`Topology`, an adjacency matrix (array or
    CSV path), an edge list or a networkx graph (see :func:`redfl.topology.custom`)."""

    def __init__(
        self,
        template: NodeFactory,
        graph: Any,
        *,
        nodes: Sequence[str] | None = None,
        directed: bool | None = None,
        allow_disconnected: bool = False,
        **kw: Unpack[DecentralizedSettings],
    ) -> None:
        topology = (
            graph
            if isinstance(graph, Topology)
            else builders.custom(
                graph, nodes=nodes, directed=directed, allow_disconnected=allow_disconnected
            )
        )
        super().__init__(template, topology, allow_disconnected=allow_disconnected, **kw)


# -- the [topology] tables --------------------------------------------------------------


class GraphTopology(TopologyTable):
    """``[topology]`` of a decentralised graph: the ``algorithm`` the nodes run (its base
    class is what ``client.target`` must subclass) and whether the graph may be in several
    pieces."""

    algorithm: Annotated[str, AfterValidator(ALGORITHMS.validator())]
    allow_disconnected: bool = False

    @model_validator(mode="after")
    def _algorithm_fits(self) -> GraphTopology:
        meta = ALGORITHMS.meta(self.algorithm)
        allowed = meta.get("schemas")
        if allowed is not None and self.schema_ not in allowed:
            needs = meta.get("needs", f"schema {allowed}")
            raise ValueError(
                f"algorithm {self.algorithm!r} needs {needs}, not schema {self.schema_!r}"
            )
        return self

    def topology(self, nodes: int) -> Topology:
        """The graph over ``nodes`` nodes (``node-0``, ...)."""
        raise NotImplementedError


class RingTopology(GraphTopology):
    """A ring; ``directed``: each node sends to its successor only."""

    schema_: Literal["ring"] = Field(default="ring", alias="schema")
    directed: bool = False

    def topology(self, nodes: int) -> Topology:
        """The ring of ``nodes`` nodes."""
        return builders.ring(nodes, directed=self.directed)


class MeshTopology(GraphTopology):
    """Every node linked to every other."""

    schema_: Literal["mesh"] = Field(default="mesh", alias="schema")

    def topology(self, nodes: int) -> Topology:
        """The complete graph of ``nodes`` nodes."""
        return builders.mesh(nodes)


class KConnectTopology(GraphTopology):
    """A connected random ``k``-regular graph, seeded by ``topology_seed``."""

    schema_: Literal["k_connect"] = Field(default="k_connect", alias="schema")
    k: int = Field(ge=1, le=100_000)
    topology_seed: int = Field(default=0, ge=0, le=2**32 - 1)

    def topology(self, nodes: int) -> Topology:
        """The seeded random ``k``-regular graph of ``nodes`` nodes."""
        return builders.k_connect(nodes, self.k, seed=self.topology_seed)


class CustomTopology(GraphTopology):
    """An adjacency matrix or edge list read from ``topology_file`` (a relative path is read
    beside the config file); the file says whether the graph is directed."""

    schema_: Literal["custom"] = Field(default="custom", alias="schema")
    topology_file: str = Field(min_length=1, json_schema_extra=SERVER_FILE)

    def topology(self, nodes: int) -> Topology:
        """The graph of the file; it must have ``nodes`` nodes.

        Raises
        ------
        ConfigError
            If the file's node count is not ``nodes``.
        """
        topology = builders.custom(self.topology_file, allow_disconnected=self.allow_disconnected)
        if len(topology.nodes) != nodes:
            raise ConfigError(
                f"client.num_clients: {nodes}, but topology.topology_file has "
                f"{len(topology.nodes)} nodes"
            )
        return topology


def graph_from_parts(table: GraphTopology, parts: FederationParts) -> DecentralizedFederation:
    """The decentralised federation a config describes.

    Raises
    ------
    ConfigError
        Naming the field: a node class that does not fit the algorithm, an option the
        node does not take, a timeout or central evaluation (round-driven only), an
        impossible or malformed topology.
    """
    node = parts.template()
    base = ALGORITHMS.get(table.algorithm)
    if not (isinstance(node, type) and issubclass(node, base) and issubclass(node, FederatedNode)):
        raise ConfigError(
            f"client.target: {node.__module__}:{node.__qualname__} is not a {base.__name__} "
            f"subclass, as algorithm {table.algorithm!r} needs"
        )
    for name in ("client_timeout", "round_timeout"):
        if parts.settings.get(name) is not None:
            raise ConfigError(
                f"federation.{name}: timeouts are for round-driven clients; a decentralised "
                f"node bounds each wait for a message with its own 'timeout' option"
            )
    if parts.central is not None:
        raise ConfigError(
            "evaluation.central: central evaluation is for round-driven schemas; "
            "decentralised nodes evaluate their own models"
        )
    _check_options(node, parts.options)
    try:
        topology = table.topology(parts.num_nodes)
        return DecentralizedFederation(
            node,
            topology,
            options=parts.options,
            roles=parts.roles,
            allow_disconnected=table.allow_disconnected,
            **parts.settings,
        )
    except TopologyError as error:
        raise ConfigError(f"topology: {error}") from None


def _check_options(node: type[Any], options: dict[str, Any]) -> None:
    """Build one node on the driver, so that a bad option fails here, not on a worker
    (a node class with an ``Options`` model has had its options validated by it)."""
    if isinstance(getattr(node, "Options", None), type) and issubclass(node.Options, BaseModel):
        return
    accepted = set(inspect.signature(node).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"client.options: unknown option(s) {unknown} for {node.__name__} "
            f"(accepts {sorted(accepted)})"
        )
    try:
        node(**options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"client.options: {node.__name__}: {error}") from None


for _name, _table, _description in (
    ("ring", RingTopology, "a ring"),
    ("mesh", MeshTopology, "every node linked to every other"),
    ("k_connect", KConnectTopology, "a random k-regular graph (seeded by topology_seed)"),
    ("custom", CustomTopology, "an adjacency matrix or edge list read from topology_file"),
):
    SCHEMAS.register(
        _name,
        SchemaSpec(_table, graph_from_parts, round_driven=False),
        description=_description,
    )
