"""Build a federation (star, hierarchical or decentralised) from a validated
:class:`FederationConfig`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from redfl.algorithms.strategy import ParameterError
from redfl.attacks import Attacked
from redfl.core.config import ConfigError, FederationConfig, describe_errors
from redfl.core.imports import check_config_imports, resolve
from redfl.core.registries import ALGORITHMS, ATTACKS, SCHEMAS
from redfl.nodes.node import FederatedNode
from redfl.schemas.base import RuntimeName
from redfl.schemas.callbacks import Callback
from redfl.schemas.decentralized import DecentralizedFederation
from redfl.schemas.hierarchical import HierarchicalFederation
from redfl.schemas.hierarchy_config import hierarchy_arguments
from redfl.schemas.star import StarFederation
from redfl.schemas.strategy_builder import attackers_from_config, strategy_from_config
from redfl.topology.validate import TopologyError

__all__ = [
    "attackers_from_config",
    "client_options",
    "decentralized_from_config",
    "federation_from_config",
    "resolve",
    "star_from_config",
    "strategy_from_config",
]


def client_options(config: FederationConfig, client: Any) -> Any:
    """The client options, validated by the client's ``Options`` model when it has one."""
    schema = getattr(client, "Options", None)
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            return schema.model_validate(config.client.options)
        except ValidationError as error:
            raise ConfigError(
                f"invalid config: {describe_errors(error, 'client.options')}"
            ) from None
    return dict(config.client.options)


def star_from_config(
    config: FederationConfig,
    callbacks: Sequence[Callback] = (),
    allowed_prefixes: Sequence[str] | None = None,
) -> StarFederation:
    """A ready (not started) star federation described by ``config`` (a hierarchical
    one for ``topology.schema = "hierarchical"``).

    The client class must provide ``initial_parameters(options)``; the optional central
    evaluation is ``evaluation.central(options)``. ``allowed_prefixes``, when given, is
    the allow-list of modules the config may import: every import path of the config is
    checked before anything is imported.
    """
    if allowed_prefixes is not None:
        check_config_imports(config, allowed_prefixes)
    client = resolve(config.client.target, "client.target", allowed_prefixes)
    options = client_options(config, client)
    make_initial = getattr(client, "initial_parameters", None)
    if make_initial is None:
        raise ConfigError(
            f"client.target: {config.client.target} has no initial_parameters(options)"
        )
    evaluate_fn = None
    if config.evaluation.central:
        try:
            evaluate_fn = resolve(
                config.evaluation.central, "evaluation.central", allowed_prefixes
            )(options)
        except ValueError as error:
            raise ConfigError(f"evaluation.central: {error}") from None
    strategy = strategy_from_config(config, allowed_prefixes)
    factory: Any = client
    if config.attack.kind != "none":
        make_attack = ATTACKS.get(config.attack.kind).client
        if make_attack is not None:
            attackers = frozenset(attackers_from_config(config))
            factory = Attacked(client, make_attack(config.attack), attackers)
    run = config.federation
    raw_options = options.model_dump() if isinstance(options, BaseModel) else options
    kind: Callable[..., StarFederation] = StarFederation
    extra: dict[str, Any] = {}
    if config.topology.schema_ == "hierarchical":
        kind, extra = HierarchicalFederation, hierarchy_arguments(config)
    try:
        return kind(
            factory,
            config.client.num_clients,
            initial_parameters=make_initial(options),
            strategy=strategy,
            client_options=raw_options,
            roles=config.client.roles,
            evaluate_fn=evaluate_fn,
            callbacks=callbacks,
            seed=run.seed,
            runtime=cast(RuntimeName, run.runtime),
            address=run.address,
            resources=config.resources,
            **extra,
            client_timeout=run.client_timeout,
            round_timeout=run.round_timeout,
            max_worker_restarts=run.max_worker_restarts,
        )
    except ParameterError as error:
        raise ConfigError(f"invalid config: strategy.{error.parameter}: {error.detail}") from None


def decentralized_from_config(
    config: FederationConfig,
    callbacks: Sequence[Callback] = (),
    allowed_prefixes: Sequence[str] | None = None,
) -> DecentralizedFederation:
    """A ready (not started) decentralised federation described by ``config``.

    Raises
    ------
    ConfigError
        Naming the field: a node class that does not fit the algorithm, an option the
        node does not take, an impossible or malformed topology.
    """
    t = config.topology
    assert t.algorithm is not None  # checked by TopologyConfig
    if allowed_prefixes is not None:
        check_config_imports(config, allowed_prefixes)
    node = resolve(config.client.target, "client.target", allowed_prefixes)
    base = ALGORITHMS.get(t.algorithm)
    if not (isinstance(node, type) and issubclass(node, base) and issubclass(node, FederatedNode)):
        raise ConfigError(
            f"client.target: {config.client.target} is not a {base.__name__} subclass, as "
            f"algorithm {t.algorithm!r} needs"
        )
    for name in ("client_timeout", "round_timeout"):
        if getattr(config.federation, name) is not None:
            raise ConfigError(
                f"federation.{name}: timeouts are for star clients; a decentralised node "
                f"bounds each wait for a message with its own 'timeout' option"
            )
    if config.evaluation.central:
        raise ConfigError(
            "evaluation.central: central evaluation is for the star schema; decentralised "
            "nodes evaluate their own models"
        )
    options = client_options(config, node)
    raw = options.model_dump() if isinstance(options, BaseModel) else options
    if not isinstance(options, BaseModel):
        accepted = set(inspect.signature(node).parameters)
        unknown = sorted(set(raw) - accepted)
        if unknown:
            raise ConfigError(
                f"client.options: unknown option(s) {unknown} for {node.__name__} "
                f"(accepts {sorted(accepted)})"
            )
    n = config.client.num_clients
    try:
        build = SCHEMAS.get(t.schema_).topology
        assert build is not None  # a graph schema (checked by TopologyConfig)
        topology = build(t, n)
        if t.schema_ == "custom" and len(topology.nodes) != n:
            raise ConfigError(
                f"client.num_clients: {n}, but topology.topology_file has "
                f"{len(topology.nodes)} nodes"
            )
        run = config.federation
        return DecentralizedFederation(
            node,
            topology,
            options=raw,
            roles=config.client.roles,
            allow_disconnected=t.allow_disconnected,
            callbacks=callbacks,
            seed=run.seed,
            runtime=cast(RuntimeName, run.runtime),
            address=run.address,
            resources=config.resources,
            max_worker_restarts=run.max_worker_restarts,
        )
    except TopologyError as error:
        raise ConfigError(f"topology: {error}") from None


def federation_from_config(
    config: FederationConfig,
    callbacks: Sequence[Callback] = (),
    allowed_prefixes: Sequence[str] | None = None,
) -> StarFederation | DecentralizedFederation:
    """The federation ``config`` describes: star, or a decentralised graph.

    ``allowed_prefixes``: the allow-list of importable modules for an untrusted config.
    """
    if not SCHEMAS.get(config.topology.schema_).graph:
        return star_from_config(config, callbacks, allowed_prefixes)
    return decentralized_from_config(config, callbacks, allowed_prefixes)
