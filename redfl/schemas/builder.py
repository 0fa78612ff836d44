"""Build a federation (star or decentralised) from a validated :class:`FederationConfig`."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from redfl import topology as topo
from redfl.algorithms.registry import make_strategy
from redfl.algorithms.strategy import ParameterError, Strategy
from redfl.attacks import (
    Attack,
    Attacked,
    GaussianNoise,
    LabelFlip,
    LittleIsEnough,
    SignFlip,
    choose_attackers,
)
from redfl.core.config import ConfigError, FederationConfig, describe_errors
from redfl.nodes.decentralized import DSGDNode, GossipNode, RingSequentialNode
from redfl.privacy import DPAdaptiveClipping, DPFixedClipping
from redfl.schemas.callbacks import Callback
from redfl.schemas.decentralized import DecentralizedFederation
from redfl.schemas.star import StarFederation
from redfl.topology.validate import TopologyError


def resolve(target: str, field: str) -> Any:
    """Import ``module:attribute``; a failure is a :class:`ConfigError` naming ``field``."""
    module_name, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{field}: cannot import {target!r}: {error}") from None


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
    config: FederationConfig, callbacks: Sequence[Callback] = ()
) -> StarFederation:
    """A ready (not started) star federation described by ``config``.

    The client class must provide ``initial_parameters(options)``; the optional central
    evaluation is ``evaluation.central(options)``.
    """
    client = resolve(config.client.target, "client.target")
    options = client_options(config, client)
    make_initial = getattr(client, "initial_parameters", None)
    if make_initial is None:
        raise ConfigError(
            f"client.target: {config.client.target} has no initial_parameters(options)"
        )
    evaluate_fn = None
    if config.evaluation.central:
        try:
            evaluate_fn = resolve(config.evaluation.central, "evaluation.central")(options)
        except ValueError as error:
            raise ConfigError(f"evaluation.central: {error}") from None
    strategy = strategy_from_config(config)
    if config.attack.kind in CLIENT_ATTACKS:
        attackers = frozenset(attackers_from_config(config))
        attack = CLIENT_ATTACKS[config.attack.kind](config)
        factory: Any = Attacked(client, attack, attackers)
    else:
        factory = client
    run = config.federation
    raw_options = options.model_dump() if isinstance(options, BaseModel) else options
    try:
        return StarFederation(
            factory,
            config.client.num_clients,
            initial_parameters=make_initial(options),
            strategy=strategy,
            client_options=raw_options,
            roles=config.client.roles,
            evaluate_fn=evaluate_fn,
            callbacks=callbacks,
            seed=run.seed,
            runtime=run.runtime,
            address=run.address,
            resources=config.resources,
        )
    except ParameterError as error:
        raise ConfigError(f"invalid config: strategy.{error.parameter}: {error.detail}") from None


CLIENT_ATTACKS: dict[str, Callable[[FederationConfig], Attack]] = {
    "sign_flip": lambda c: SignFlip(c.attack.scale),
    "gaussian": lambda c: GaussianNoise(c.attack.std),
    "label_flip": lambda c: LabelFlip(c.attack.num_classes),
}
"""Attacks carried out by the malicious clients themselves, by ``attack.kind``."""


def attackers_from_config(config: FederationConfig) -> list[str]:
    """The malicious client ids: a seeded choice of ``attack.malicious_fraction``."""
    ids = [f"client-{i}" for i in range(config.client.num_clients)]
    return choose_attackers(ids, config.attack.malicious_fraction, config.federation.seed)


def strategy_from_config(config: FederationConfig) -> Strategy:
    """The ``[strategy]`` with its parameters, wrapped for ``[privacy]`` and ALIE attacks.

    Raises
    ------
    ConfigError
        Naming the bad parameter (``strategy.f: ...``) and its bound.
    """
    s = config.strategy
    sampling: dict[str, Any] = {
        "fraction_fit": s.fraction_fit,
        "fraction_evaluate": s.fraction_evaluate,
        "min_evaluate_clients": s.min_evaluate_clients,
        "max_update_norm": s.max_update_norm,
    }
    if s.min_fit_clients is not None:
        sampling["min_fit_clients"] = s.min_fit_clients
    try:
        strategy = make_strategy(s.name, **sampling, **s.params())
    except ParameterError as error:
        raise ConfigError(f"invalid config: strategy.{error.parameter}: {error.detail}") from None
    except TypeError as error:  # a parameter of the wrong type
        raise ConfigError(f"invalid config: strategy: {error}") from None
    p = config.privacy
    try:
        if p.mode == "fixed":
            strategy = DPFixedClipping(
                strategy,
                clipping_norm=p.clipping_norm,
                noise_multiplier=p.noise_multiplier,
                side=p.side,
                delta=p.delta,
                seed=config.federation.seed,
            )
        elif p.mode == "adaptive":
            strategy = DPAdaptiveClipping(
                strategy,
                initial_clipping_norm=p.clipping_norm,
                noise_multiplier=p.noise_multiplier,
                target_quantile=p.target_quantile,
                clip_lr=p.clip_lr,
                clipped_count_stddev=p.clipped_count_stddev,
                side=p.side,
                delta=p.delta,
                seed=config.federation.seed,
            )
    except ParameterError as error:
        raise ConfigError(f"invalid config: privacy.{error.parameter}: {error.detail}") from None
    if config.attack.kind == "alie":
        strategy = LittleIsEnough(strategy, attackers_from_config(config), config.attack.z)
    return strategy


ALGORITHM_NODES = {
    "gossip": GossipNode,
    "dsgd": DSGDNode,
    "ring_sequential": RingSequentialNode,
}
"""The node base class each ``topology.algorithm`` needs of ``client.target``."""


def decentralized_from_config(
    config: FederationConfig, callbacks: Sequence[Callback] = ()
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
    node = resolve(config.client.target, "client.target")
    base = ALGORITHM_NODES[t.algorithm]
    if not (isinstance(node, type) and issubclass(node, base)):
        raise ConfigError(
            f"client.target: {config.client.target} is not a {base.__name__} subclass, as "
            f"algorithm {t.algorithm!r} needs"
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
        topology = {
            "ring": lambda: topo.ring(n, directed=t.directed),
            "mesh": lambda: topo.mesh(n),
            "k_connect": lambda: topo.k_connect(n, t.k or 0, seed=t.topology_seed),
            "custom": lambda: topo.custom(t.topology_file, allow_disconnected=t.allow_disconnected),
        }[t.schema_]()
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
            runtime=run.runtime,
            address=run.address,
            resources=config.resources,
        )
    except TopologyError as error:
        raise ConfigError(f"topology: {error}") from None


def federation_from_config(
    config: FederationConfig, callbacks: Sequence[Callback] = ()
) -> StarFederation | DecentralizedFederation:
    """The federation ``config`` describes: star, or a decentralised graph."""
    if config.topology.schema_ == "star":
        return star_from_config(config, callbacks)
    return decentralized_from_config(config, callbacks)
