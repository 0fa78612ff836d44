"""The strategy a config describes: registered by name or a user class by import path,
wrapped for ``[privacy]`` and server-side attacks."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from redfl.algorithms.registry import SAMPLING, make_strategy
from redfl.algorithms.strategy import ParameterError, Strategy
from redfl.attacks import choose_attackers
from redfl.core.config import ConfigError, FederationConfig
from redfl.core.imports import resolve
from redfl.core.registries import ATTACKS
from redfl.privacy import DPAdaptiveClipping, DPFixedClipping


def attackers_from_config(config: FederationConfig) -> list[str]:
    """The malicious client ids: a seeded choice of ``attack.malicious_fraction``."""
    ids = [f"client-{i}" for i in range(config.client.num_clients)]
    return choose_attackers(ids, config.attack.malicious_fraction, config.federation.seed)


def target_strategy(
    cls: Any, target: str, sampling: dict[str, Any], explicit: set[str], params: dict[str, Any]
) -> Strategy:
    """Build a user strategy class with the ``[strategy]`` keys its ``__init__`` takes.

    A sampling key the class does not take is dropped unless the config sets it
    (``explicit``); its own parameters must be named in the signature, or accepted by a
    ``**kwargs`` (which then passes on the sampling keys too).

    Raises
    ------
    ConfigError
        ``strategy.target`` not a :class:`Strategy` subclass; ``strategy.<key>`` not a
        parameter of it, or a required parameter missing.
    """
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"strategy.target: {target} is not a Strategy subclass")
    signature = inspect.signature(cls)
    named = {
        p.name: p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    open_ended = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    accepted = set(named) | (set(SAMPLING) | {"max_update_norm"} if open_ended else set())
    for key in sorted(set(params) | (explicit & set(sampling))):
        if key not in accepted:
            raise ConfigError(
                f"invalid config: strategy.{key}: not a parameter of {target}; "
                f"it takes {sorted(accepted)}"
            )
    kwargs = {**{k: v for k, v in sampling.items() if k in accepted}, **params}
    missing = [n for n, p in named.items() if p.default is p.empty and n not in kwargs]
    if missing:
        raise ConfigError(
            f"invalid config: strategy.{missing[0]}: required by {target} (set it in [strategy])"
        )
    try:
        built = cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"invalid config: strategy: {target}: {error}") from None
    return built


def strategy_from_config(
    config: FederationConfig, allowed_prefixes: Sequence[str] | None = None
) -> Strategy:
    """The ``[strategy]`` with its parameters, wrapped for ``[privacy]`` and server attacks.

    ``allowed_prefixes``, when given, limits the modules ``strategy.target`` may name
    (checked before anything is imported).

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
        if s.target is not None:
            cls = resolve(s.target, "strategy.target", allowed_prefixes)
            explicit = set(s.model_fields_set)
            strategy = target_strategy(cls, s.target, sampling, explicit, s.params())
        else:
            strategy = make_strategy(s.name, **sampling, **s.params())
    except ParameterError as error:
        raise ConfigError(f"invalid config: strategy.{error.parameter}: {error.detail}") from None
    except TypeError as error:  # a parameter of the wrong type
        raise ConfigError(f"invalid config: strategy: {error}") from None
    strategy = _private(config, strategy)
    if config.attack.kind != "none":
        wrap = ATTACKS.get(config.attack.kind).wrap
        if wrap is not None:
            strategy = wrap(strategy, attackers_from_config(config), config.attack)
    return strategy


def _private(config: FederationConfig, strategy: Strategy) -> Strategy:
    p = config.privacy
    try:
        if p.mode == "fixed":
            return DPFixedClipping(
                strategy,
                clipping_norm=p.clipping_norm,
                noise_multiplier=p.noise_multiplier,
                side=p.side,
                delta=p.delta,
                seed=config.federation.seed,
            )
        if p.mode == "adaptive":
            return DPAdaptiveClipping(
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
    return strategy
