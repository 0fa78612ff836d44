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

from pydantic import Field, ValidationError, field_validator, model_validator

from redfl.core.config_base import (
    IMPORT_TARGET,
    TARGET_PATTERN,
    ConfigError,
    Strict,
    describe_errors,
    registered,
)
from redfl.core.config_tables import (
    AttackConfig,
    PrivacyConfig,
    StrategyConfig,
    StrategyParam,
    TopologyConfig,
)
from redfl.core.roles import parse_roles

__all__ = [
    "AttackConfig",
    "ClientConfig",
    "ConfigError",
    "EvaluationConfig",
    "FederationConfig",
    "PrivacyConfig",
    "ResourceMap",
    "ResourcesConfig",
    "RunConfig",
    "StrategyConfig",
    "StrategyParam",
    "TopologyConfig",
    "describe_errors",
    "load_config",
    "parse_config",
]

ResourceMap = dict[str, float]


def _check_resources(value: ResourceMap, field: str) -> ResourceMap:
    for key, amount in value.items():
        if not 0 <= amount < math.inf:
            raise ValueError(f"{field}[{key!r}] must be a finite number >= 0, got {amount}")
    return value


class ResourcesConfig(Strict):
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


class ClientConfig(Strict):
    """The client class (``module:Class``), how many, their roles and their options."""

    target: str = Field(pattern=TARGET_PATTERN, json_schema_extra=IMPORT_TARGET)
    num_clients: int = Field(ge=1, le=1_000_000)
    roles: str = "train-eval"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: str) -> str:
        parse_roles(value)
        return value


class EvaluationConfig(Strict):
    """Optional central evaluation: ``module:function`` called with the client options."""

    central: str | None = Field(
        default=None, pattern=TARGET_PATTERN, json_schema_extra=IMPORT_TARGET
    )


class RunConfig(Strict):
    """The run itself: name, rounds, seed, where it runs."""

    name: str = Field(default="federation", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    rounds: int = Field(default=10, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    runtime: str = "ray"
    address: str | None = None
    connect_timeout: float = Field(default=30.0, gt=0.0, le=3600.0)
    """Seconds joining a Ray cluster (``address``) may take before the run fails."""
    checkpoint_every: int = Field(default=0, ge=0, le=100_000)
    """Save the server state every this many rounds (0: only when the run ends)."""
    client_timeout: float | None = Field(default=None, gt=0.0, le=86_400.0)
    """Seconds a star client may run before it fails (``timeout after X s``) and its worker
    is replaced; unset: no limit."""
    round_timeout: float | None = Field(default=None, gt=0.0, le=864_000.0)
    """Seconds a star round may take; past it, unfinished clients fail; unset: no limit."""
    max_worker_restarts: int = Field(default=3, ge=0, le=10_000)
    """How many times each worker may be re-created after it died or was replaced."""

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, value: str) -> str:
        return registered("RUNTIMES", value)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"auto|local|ray://\S+|[^\s:/]+:\d+", value):
            raise ValueError(
                "must be 'auto', 'local', 'ray://host:port' or 'host:port' (a Ray GCS address)"
            )
        return value


class FederationConfig(Strict):
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

    A relative ``topology.topology_file`` or ``topology.tree_file`` is read from the config
    file's folder.
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
    for key in ("topology_file", "tree_file"):
        if isinstance(topology, dict) and isinstance(topology.get(key), str):
            name = topology[key]
            topology = data["topology"] = {
                **topology,
                key: str(path.parent / name) if name else name,
            }
    return parse_config(data, overrides)
