"""The schemas by name (:data:`SCHEMAS`, ``topology.schema``), each with its ``[topology]``
table and the builder that turns a config into its federation.

A schema module defines its table (a :class:`TopologyTable` subclass whose ``schema`` is a
literal: only its own keys, each typed and bounded) and a builder that takes the validated
table and the :class:`FederationParts` the run layer resolved from the rest of the config,
and registers both here. The config's ``[topology]`` is a discriminated union of the
registered tables (:mod:`redfl.run.config`); nothing else compares schema names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import Field

from redfl.algorithms.strategy import Strategy
from redfl.core.arrays import Parameters
from redfl.core.config import Strict
from redfl.core.registry import Registry
from redfl.core.result import EvaluateFn
from redfl.nodes.client import Client
from redfl.schemas.base import Federation, FederationSettings, StarSettings


class TopologyTable(Strict):
    """Base of every schema's ``[topology]`` table: ``schema`` names the schema."""

    schema_: str = Field(alias="schema")


T = TypeVar("T", bound=TopologyTable)


class FederationParts(Protocol):
    """What a schema's builder takes from a config besides its ``[topology]`` table.

    The run layer resolves these from ``[client]``, ``[federation]``, ``[resources]``,
    ``[strategy]``, ``[privacy]``, ``[attack]``, ``[evaluation]`` and
    ``[secure_aggregation]``; what needs the user's code or builds a strategy is done on
    request, so a schema that does not use it (a
    decentralised graph has no strategy) never pays for it. Every method raises
    :class:`~redfl.core.config.ConfigError` naming the field at fault.
    """

    num_nodes: int
    """``client.num_clients``."""
    node_ids: list[str] | None
    """The clients' node ids when the config names them (``sites.expected``); ``None``: the
    schema's own (``client-0``, ...)."""
    roles: str
    """``client.roles``."""
    settings: FederationSettings
    """Seed, runtime, address, resources, timeouts, restarts and callbacks."""
    central: str | None
    """``evaluation.central`` as written (``None``: no central evaluation)."""

    @property
    def options(self) -> dict[str, Any]:
        """``client.options``, validated by the client class's ``Options`` model if it has
        one."""
        ...

    def template(self) -> type[Any]:
        """The class ``client.target`` names, imported."""
        ...

    def client(self) -> Callable[..., Client]:
        """The client factory of a round-driven schema: the template, wrapped when the
        ``[attack]`` table makes some clients malicious."""
        ...

    def strategy(self) -> Strategy:
        """The ``[strategy]`` with its parameters, wrapped for ``[privacy]`` and attacks."""
        ...

    def initial_parameters(self) -> Parameters:
        """The client class's ``initial_parameters(options)``."""
        ...

    def evaluate_fn(self) -> EvaluateFn | None:
        """The central evaluation ``evaluation.central(options)``, or ``None``."""
        ...

    def star_settings(self) -> StarSettings:
        """What a round-driven schema's class takes beside the client, its number and the
        initial parameters: the strategy, options, client ids (:attr:`node_ids`), roles,
        central evaluation and the settings."""
        ...


@dataclass(frozen=True)
class SchemaSpec(Generic[T]):
    """A registered schema.

    Attributes
    ----------
    config:
        Its ``[topology]`` table.
    build:
        ``build(table, parts)``: the (lazy, not started) federation the config describes.
    round_driven:
        Whether clients run in rounds around a server strategy (then ``[strategy]``,
        ``[privacy]``, ``[attack]`` and ``[evaluation]`` apply, and the run has a global
        model after every round).
    sites:
        Whether its clients can be sites (``[sites]``): its builder takes the node ids
        ``FederationParts.node_ids`` and its rounds send clients only fit and evaluate
        requests.
    """

    config: type[T]
    build: Callable[[T, FederationParts], Federation]
    round_driven: bool
    sites: bool = False


SCHEMAS: Registry[SchemaSpec[Any]] = Registry("schema")
"""Schemas by ``topology.schema``, filled as :mod:`redfl.schemas` is imported."""
