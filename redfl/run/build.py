"""From a validated config to its (lazy, not started) federation.

The ``[topology]`` table's schema, looked up once in
:data:`~redfl.schemas.registry.SCHEMAS`, builds the federation from its own table and the
:class:`ConfigParts` resolved here from the rest of the config: the client class and its
options, the settings, and on request the strategy (``[strategy]`` wrapped for ``[privacy]``
and server-side ``[attack]`` s), the initial parameters and the central evaluation. Every
error is a :class:`~redfl.core.config.ConfigError` naming the field.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from redfl.algorithms.registry import SAMPLING, make_strategy
from redfl.algorithms.strategy import ParameterError, Strategy
from redfl.attacks import Attacked, choose_attackers
from redfl.attacks.registry import ATTACKS
from redfl.core.arrays import Parameters
from redfl.core.config import ConfigError, node_options
from redfl.core.imports import check_config_imports, resolve
from redfl.core.result import EvaluateFn
from redfl.nodes.client import Client
from redfl.privacy.clipping import private
from redfl.run.config import FederationConfig
from redfl.schemas import SCHEMAS
from redfl.schemas.base import Federation, FederationSettings, StarSettings
from redfl.schemas.callbacks import Callback

__all__ = [
    "ConfigParts",
    "attackers_from_config",
    "federation_from_config",
    "strategy_from_config",
]


def federation_from_config(
    config: FederationConfig,
    callbacks: Sequence[Callback] = (),
    allowed_prefixes: Sequence[str] | None = None,
) -> Federation:
    """The federation ``config`` describes, built by its schema (nothing starts).

    ``allowed_prefixes``, when given, is the allow-list of modules an untrusted config may
    import: every import path of the config is checked before anything is imported.

    Raises
    ------
    ConfigError
        Naming the field: a target that does not import, a strategy parameter out of
        bounds, a node class or option its schema refuses, a bad topology.
    """
    if allowed_prefixes is not None:
        check_config_imports(config, allowed_prefixes)
    spec = SCHEMAS.get(config.topology.schema_)
    if config.sites is not None and not spec.sites:
        able = [name for name, other in SCHEMAS.items() if other.sites]
        raise ConfigError(
            f"sites: the {config.topology.schema_!r} schema cannot run its clients at sites "
            f"(schemas that can: {', '.join(able)})"
        )
    parts = ConfigParts(config, callbacks, allowed_prefixes)
    try:
        return spec.build(config.topology, parts)
    except ConfigError:
        raise
    except ParameterError as error:
        raise ConfigError(f"invalid config: strategy.{error.parameter}: {error.detail}") from None
    except ValueError as error:  # a constructor's check (roles, sizes, topology)
        raise ConfigError(str(error)) from None


class ConfigParts:
    """The :class:`~redfl.schemas.registry.FederationParts` of a validated config.

    What imports user code, calls it or builds a strategy is done on first request and
    kept.
    """

    def __init__(
        self,
        config: FederationConfig,
        callbacks: Sequence[Callback] = (),
        allowed_prefixes: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.allowed_prefixes = allowed_prefixes
        self.num_nodes = config.client.num_clients
        self.node_ids = node_ids(config)
        self.roles = config.client.roles
        self.central = config.evaluation.central
        run = config.federation
        resources = config.resources
        if config.sites is not None:  # one worker per site's client, in every runtime
            resources = resources.model_copy(update={"num_workers": len(config.sites.expected)})
        self.settings: FederationSettings = {
            "seed": run.seed,
            "runtime": run.runtime,
            "address": run.address,
            "resources": resources,
            "callbacks": callbacks,
            "client_timeout": run.client_timeout,
            "round_timeout": run.round_timeout,
            "max_worker_restarts": run.max_worker_restarts,
            "sites": config.sites,
        }

    def template(self) -> type[Any]:
        """The class ``client.target`` names, imported."""
        return self._template

    @cached_property
    def _template(self) -> type[Any]:
        found = resolve(self.config.client.target, "client.target", self.allowed_prefixes)
        if not isinstance(found, type):
            raise ConfigError(f"client.target: {self.config.client.target} is not a class")
        return found

    @cached_property
    def _options(self) -> Any:
        """The options as the class's ``Options`` model validates them (else the dict)."""
        return node_options(self._template, self.config.client.options, "client.options")

    @property
    def options(self) -> dict[str, Any]:
        """``client.options``, validated by the client class's ``Options`` model if it has
        one (then with its defaults filled in)."""
        options = self._options
        return options.model_dump() if isinstance(options, BaseModel) else dict(options)

    def client(self) -> Callable[..., Client]:
        """The client class, wrapped when ``[attack]`` makes some clients malicious."""
        attack = self.config.attack
        make_attack = None if attack.kind == "none" else ATTACKS.get(attack.kind).client
        if make_attack is None:
            client: Callable[..., Client] = self._template
            return client
        attackers = frozenset(attackers_from_config(self.config))
        return Attacked(self._template, make_attack(attack), attackers)

    def strategy(self) -> Strategy:
        """The ``[strategy]`` with its parameters, wrapped for ``[privacy]`` and attacks."""
        return strategy_from_config(self.config, self.allowed_prefixes)

    def initial_parameters(self) -> Parameters:
        """The client class's ``initial_parameters(options)``."""
        make = getattr(self._template, "initial_parameters", None)
        if make is None:
            raise ConfigError(
                f"client.target: {self.config.client.target} has no initial_parameters(options)"
            )
        parameters: Parameters = make(self._options)
        return parameters

    def evaluate_fn(self) -> EvaluateFn | None:
        """The central evaluation ``evaluation.central(options)``, or ``None``."""
        if self.central is None:
            return None
        factory = resolve(self.central, "evaluation.central", self.allowed_prefixes)
        try:
            evaluate: EvaluateFn = factory(self._options)
        except ValueError as error:
            raise ConfigError(f"evaluation.central: {error}") from None
        return evaluate

    def star_settings(self) -> StarSettings:
        """The strategy, options, client ids (the sites'), roles, central evaluation, secure
        aggregation and the settings."""
        return StarSettings(
            strategy=self.strategy(),
            options=self.options,
            roles=self.roles,
            evaluate_fn=self.evaluate_fn(),
            client_ids=self.node_ids,
            secure_aggregation=self.config.secure_aggregation,
            **self.settings,
        )


def node_ids(config: FederationConfig) -> list[str] | None:
    """The clients' node ids a config names: its sites' (``None``: the schema's own)."""
    return None if config.sites is None else list(config.sites.expected)


def attackers_from_config(config: FederationConfig) -> list[str]:
    """The malicious client ids: a seeded choice of ``attack.malicious_fraction``."""
    ids = node_ids(config) or [f"client-{i}" for i in range(config.client.num_clients)]
    return choose_attackers(ids, config.attack.malicious_fraction, config.federation.seed)


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
    table = config.strategy
    try:
        if table.target is not None:
            cls = resolve(table.target, "strategy.target", allowed_prefixes)
            explicit = set(table.model_fields_set)
            strategy = _target_strategy(
                cls, table.target, table.sampling(), explicit, table.params()
            )
        else:
            strategy = make_strategy(table.name, **table.sampling(), **table.params())
    except ParameterError as error:
        raise ConfigError(f"invalid config: strategy.{error.parameter}: {error.detail}") from None
    try:
        strategy = private(strategy, config.privacy, config.federation.seed)
    except ParameterError as error:
        raise ConfigError(f"invalid config: privacy.{error.parameter}: {error.detail}") from None
    if config.attack.kind != "none":
        wrap = ATTACKS.get(config.attack.kind).wrap
        if wrap is not None:
            strategy = wrap(strategy, attackers_from_config(config), config.attack)
    return strategy


def _target_strategy(
    cls: Any, target: str, sampling: dict[str, Any], explicit: set[str], params: dict[str, Any]
) -> Strategy:
    """Build a user strategy class with the ``[strategy]`` keys its ``__init__`` takes.

    A sampling key the class does not take is dropped unless the config sets it
    (``explicit``); its own parameters must be named in the signature, or accepted by a
    ``**kwargs`` (which then passes on the sampling keys too).
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
    accepted = set(named) | (set(SAMPLING) if open_ended else set())
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
        built: Strategy = cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"invalid config: strategy: {target}: {error}") from None
    return built
