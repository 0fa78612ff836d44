"""The validated federation config: every field typed and bounded, unknown keys refused.

TOML files load into :class:`FederationConfig`; a bad value raises :class:`ConfigError`
whose message names the field (dotted path) and what is allowed.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from redfl.core.roles import parse_roles

ResourceMap = dict[str, float]


class ConfigError(ValueError):
    """A config file or value is wrong; the message is one line naming the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_resources(value: ResourceMap, field: str) -> ResourceMap:
    for key, amount in value.items():
        if not 0 <= amount < math.inf:
            raise ValueError(f"{field}[{key!r}] must be a finite number >= 0, got {amount}")
    return value


class ResourcesConfig(_Strict):
    """How workers are sized and placed (see :mod:`redfl.runtime.resources`)."""

    split: Literal["uniform", "explicit", "adaptive"] = "uniform"
    num_workers: int | None = Field(default=None, ge=1, le=10_000)
    worker: ResourceMap = Field(default_factory=lambda: {"CPU": 1.0})
    bundles: list[ResourceMap] = Field(default_factory=list, max_length=10_000)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    client_state_mb: float = Field(default=256.0, ge=0.0, le=1e7)
    """Memory bound per worker for stateful clients' state; the rest is spilled to disk."""
    placement_group: Literal["own", "current"] = "own"
    """``own``: reserve a placement group for the federation; ``current``: place workers in
    bundles 1, 2, ... of the group the driver runs in (a Ray Tune trial; bundle 0 is its)."""

    @field_validator("worker")
    @classmethod
    def _worker(cls, value: ResourceMap) -> ResourceMap:
        return _check_resources(value, "worker")

    @field_validator("bundles")
    @classmethod
    def _bundles(cls, value: list[ResourceMap]) -> list[ResourceMap]:
        for bundle in value:
            _check_resources(bundle, "bundles")
        return value

    @model_validator(mode="after")
    def _explicit_needs_bundles(self) -> ResourcesConfig:
        if self.split == "explicit" and not self.bundles:
            raise ValueError("split 'explicit' needs a non-empty 'bundles' list")
        if self.split != "explicit" and self.bundles:
            raise ValueError("'bundles' is only used with split = 'explicit'")
        return self


StrategyName = Literal[
    "fedavg",
    "fedavgm",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "qfedavg",
]
"""The registered strategies (``redfl.algorithms.registry.STRATEGIES`` holds their classes)."""

StrategyParam = bool | int | float | str
"""The type of a strategy's own parameter in the ``[strategy]`` table."""


class StrategyConfig(_Strict):
    """The strategy (by registered name), its sampling of clients and its own parameters.

    Keys other than the declared ones (``f = 2``, ``eta = 0.01``, ...) are the named
    strategy's parameters; they are checked against it when the federation is built
    (``redfl strategies`` lists them).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: StrategyName = "fedavg"
    fraction_fit: float = Field(default=1.0, ge=0.0, le=1.0)
    min_fit_clients: int | None = Field(default=None, ge=1)
    fraction_evaluate: float = Field(default=0.0, ge=0.0, le=1.0)
    min_evaluate_clients: int = Field(default=0, ge=0)
    max_update_norm: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _scalar_params(self) -> StrategyConfig:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, StrategyParam):
                raise ValueError(f"strategy.{key} must be a number, string or boolean")
        return self

    def params(self) -> dict[str, StrategyParam]:
        """The strategy's own parameters (the undeclared keys)."""
        return dict(self.model_extra or {})


class PrivacyConfig(_Strict):
    """Central differential privacy (``mode = "fixed"`` or ``"adaptive"`` clipping)."""

    mode: Literal["none", "fixed", "adaptive"] = "none"
    side: Literal["server", "client"] = "server"
    clipping_norm: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    noise_multiplier: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    target_quantile: float = Field(default=0.5, gt=0.0, lt=1.0)
    clip_lr: float = Field(default=0.2, gt=0.0, allow_inf_nan=False)
    clipped_count_stddev: float = Field(default=2.0, ge=0.0, allow_inf_nan=False)


class AttackConfig(_Strict):
    """Attack simulation: which attack, and the seeded fraction of malicious clients."""

    kind: Literal["none", "sign_flip", "gaussian", "label_flip", "alie"] = "none"
    malicious_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    scale: float = Field(default=10.0, gt=0.0, allow_inf_nan=False)
    std: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    num_classes: int = Field(default=10, ge=2)
    z: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _fraction_with_kind(self) -> AttackConfig:
        if self.kind == "none" and self.malicious_fraction > 0:
            raise ValueError("malicious_fraction > 0 needs an attack kind")
        if self.kind != "none" and self.malicious_fraction == 0:
            raise ValueError(f"attack kind {self.kind!r} needs malicious_fraction > 0")
        return self


class ClientConfig(_Strict):
    """The client class (``module:Class``), how many, their roles and their options."""

    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    num_clients: int = Field(ge=1, le=1_000_000)
    roles: str = "train-eval"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: str) -> str:
        parse_roles(value)
        return value


class EvaluationConfig(_Strict):
    """Optional central evaluation: ``module:function`` called with the client options."""

    central: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class RunConfig(_Strict):
    """The run itself: name, rounds, seed, where it runs."""

    name: str = Field(default="federation", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    rounds: int = Field(default=10, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    runtime: Literal["ray", "local"] = "ray"
    address: str | None = None
    connect_timeout: float = Field(default=30.0, gt=0.0, le=3600.0)
    """Seconds joining a Ray cluster (``address``) may take before the run fails."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"auto|local|ray://\S+|[^\s:/]+:\d+", value):
            raise ValueError(
                "must be 'auto', 'local', 'ray://host:port' or 'host:port' (a Ray GCS address)"
            )
        return value


class TopologyConfig(_Strict):
    """The schema (star, or a decentralised graph) and, for a graph, its algorithm.

    ``client.target`` then names the node class (a ``GossipNode``, ``DSGDNode`` or
    ``RingSequentialNode`` subclass, as ``algorithm`` says) and ``client.num_clients``
    the number of nodes; ``topology_file`` (custom) is an adjacency-matrix CSV.
    """

    schema_: Literal["star", "ring", "mesh", "k_connect", "custom"] = Field(
        default="star", alias="schema"
    )
    algorithm: Literal["gossip", "dsgd", "ring_sequential"] | None = None
    k: int | None = Field(default=None, ge=1, le=100_000)
    topology_file: str | None = Field(default=None, min_length=1)
    directed: bool = False
    allow_disconnected: bool = False
    topology_seed: int = Field(default=0, ge=0, le=2**32 - 1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> TopologyConfig:
        schema = self.schema_
        if schema == "star":
            if self.algorithm is not None:
                raise ValueError("'algorithm' is for decentralised schemas, not 'star'")
            return self
        if self.algorithm is None:
            raise ValueError(
                f"schema {schema!r} needs an algorithm: 'gossip', 'dsgd' or 'ring_sequential'"
            )
        if (schema == "k_connect") != (self.k is not None):
            raise ValueError("'k' is required with schema 'k_connect', and only used there")
        if (schema == "custom") != (self.topology_file is not None):
            raise ValueError(
                "'topology_file' is required with schema 'custom', and only used there"
            )
        if self.algorithm == "ring_sequential" and schema not in ("ring", "custom"):
            raise ValueError(f"algorithm 'ring_sequential' needs a ring, not schema {schema!r}")
        if self.directed and schema != "ring":
            raise ValueError("'directed' applies to schema 'ring' (a custom matrix says itself)")
        return self


class FederationConfig(_Strict):
    """A whole federation (star or decentralised), as written in a TOML file."""

    federation: RunConfig = Field(default_factory=RunConfig)
    client: ClientConfig
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    topology: TopologyConfig = Field(default_factory=TopologyConfig)

    @model_validator(mode="after")
    def _enough_clients(self) -> FederationConfig:
        if (self.strategy.min_fit_clients or 1) > self.client.num_clients:
            raise ValueError(
                f"strategy.min_fit_clients ({self.strategy.min_fit_clients}) exceeds "
                f"client.num_clients ({self.client.num_clients})"
            )
        return self


def describe_errors(error: ValidationError, prefix: str = "") -> str:
    """One line naming each bad field and what is allowed."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "") or "config"
        if item["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key")
        else:
            message = item["msg"].removeprefix("Value error, ")
            got = item.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            parts.append(f"{where}: {message}{shown}")
    return "; ".join(parts)


def parse_config(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> FederationConfig:
    """Validate a config dict; ``overrides`` replace keys of the ``[federation]`` table."""
    merged = dict(data)
    if overrides:
        section = merged.get("federation", {})
        if not isinstance(section, dict):
            raise ConfigError(f"invalid config: federation: must be a table, got {section!r}")
        merged["federation"] = {**section, **overrides}
    try:
        return FederationConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(f"invalid config: {describe_errors(error)}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> FederationConfig:
    """Read and validate a TOML config file.

    Raises
    ------
    ConfigError
        If the file is missing, is not TOML, or holds a bad value.

    A relative ``topology.topology_file`` is read from the config file's folder.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    topology = data.get("topology")
    if isinstance(topology, dict) and isinstance(topology.get("topology_file"), str):
        name = topology["topology_file"]
        data["topology"] = {**topology, "topology_file": str(path.parent / name) if name else name}
    return parse_config(data, overrides)
