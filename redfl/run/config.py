"""The federation config: every table typed and bounded, unknown keys refused.

A TOML file (or a dict of the same tables) validates into :class:`FederationConfig`:
``[federation]`` (:class:`RunConfig`), ``[client]``, ``[strategy]``, ``[privacy]``,
``[attack]``, ``[evaluation]``, ``[resources]``, ``[topology]``, ``[tracking]``
(:mod:`redfl.run.tracking`) and, when present, ``[secure_aggregation]`` and ``[sites]``. Each
table lives with
what it configures; ``[topology]`` is a discriminated union of the registered schemas'
tables, told apart by its ``schema`` key (default ``"star"``), so each schema's table holds
only its own keys, typed and bounded.
A bad value raises :class:`~redfl.core.config.ConfigError` whose message names the field
(dotted path) and what is allowed.

Examples
--------
>>> config = parse_config({"client": {"target": "m:C", "num_clients": 4},
...                        "topology": {"schema": "ring", "algorithm": "gossip"}})
>>> type(config.topology).__name__, config.topology.directed
('RingTopology', False)
>>> parse_config({"client": {"target": "m:C", "num_clients": 4},
...               "topology": {"schema": "ring", "algorithm": "gossip", "k": 3}})
Traceback (most recent call last):
...
redfl.core.config.ConfigError: invalid config: topology.k: unknown key
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from redfl.algorithms.registry import StrategyConfig
from redfl.attacks.registry import AttackConfig
from redfl.core.config import IMPORT_TARGET, TARGET_PATTERN, ConfigError, Strict, describe_errors
from redfl.core.roles import parse_roles
from redfl.privacy.clipping import PrivacyConfig
from redfl.privacy.secagg import SecureAggregationConfig
from redfl.run.tracking import TrackingConfig
from redfl.runtime.registry import RUNTIMES
from redfl.runtime.resources import ResourcesConfig
from redfl.runtime.sites.config import SitesConfig
from redfl.schemas import SCHEMAS
from redfl.schemas.registry import TopologyTable
from redfl.schemas.star import StarTopology

__all__ = [
    "ClientConfig",
    "EvaluationConfig",
    "FederationConfig",
    "RunConfig",
    "TopologyConfig",
    "load_config",
    "parse_config",
]


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
    """The ``[federation]`` table: the run itself: name, rounds, seed, where it runs."""

    name: str = Field(default="federation", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    rounds: int = Field(default=10, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    runtime: Annotated[str, AfterValidator(RUNTIMES.validator())] = "ray"
    address: str | None = None
    connect_timeout: float = Field(default=30.0, gt=0.0, le=3600.0)
    """Seconds joining a Ray cluster (``address``) may take before the run fails."""
    checkpoint_every: int = Field(default=0, ge=0, le=100_000)
    """Save the server state every this many rounds (0: only when the run ends)."""
    client_timeout: float | None = Field(default=None, gt=0.0, le=86_400.0)
    """Seconds a client may run before it fails (``timeout after X s``) and its worker is
    replaced; unset: no limit."""
    round_timeout: float | None = Field(default=None, gt=0.0, le=864_000.0)
    """Seconds a round may take; past it, unfinished clients fail; unset: no limit."""
    max_worker_restarts: int = Field(default=3, ge=0, le=10_000)
    """How many times each worker may be re-created after it died or was replaced."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"auto|local|ray://\S+|[^\s:/]+:\d+", value):
            raise ValueError(
                "must be 'auto', 'local', 'ray://host:port' or 'host:port' (a Ray GCS address)"
            )
        return value


def schema(table: Any) -> str:
    """The ``schema`` a ``[topology]`` table names (``"star"`` when it names none)."""
    if isinstance(table, TopologyTable):
        return table.schema_
    if isinstance(table, dict):
        return str(table.get("schema", "star"))
    return "star"


def _topology_table(value: Any, handler: ValidatorFunctionWrapHandler) -> TopologyTable:
    """Validate ``[topology]`` with the table of the schema it names, looked up in
    :data:`~redfl.schemas.registry.SCHEMAS` when the config is validated (so a schema
    registered later is accepted too)."""
    if isinstance(value, TopologyTable):
        return value
    name = schema(value)
    if name not in SCHEMAS:
        raise PydanticCustomError(
            "union_tag_invalid",
            "Input tag {tag} does not match any of the expected tags: {expected_tags}",
            {
                "discriminator": "'schema'",
                "tag": name,
                "expected_tags": ", ".join(repr(n) for n in SCHEMAS.names()),
            },
        )
    table: TopologyTable = SCHEMAS.get(name).config.model_validate(value)
    return table


TopologyConfig = Annotated[SerializeAsAny[TopologyTable], WrapValidator(_topology_table)]
"""The ``[topology]`` table: a union of the schemas' tables, told apart by ``schema``."""


class FederationConfig(Strict):
    """A whole federation, as written in a TOML file."""

    federation: RunConfig = Field(default_factory=RunConfig)
    client: ClientConfig
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    topology: TopologyConfig = Field(default_factory=StarTopology)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    sites: SitesConfig | None = None
    """The sites that host the clients (``runtime = "sites"``); with another runtime, only
    ``expected`` is used: the clients' node ids."""
    secure_aggregation: SecureAggregationConfig | None = None
    """Present (even empty): the server learns only the sum of the clients' updates."""

    @model_validator(mode="after")
    def _enough_clients(self) -> FederationConfig:
        if (self.strategy.min_fit_clients or 1) > self.client.num_clients:
            raise ValueError(
                f"strategy.min_fit_clients ({self.strategy.min_fit_clients}) exceeds "
                f"client.num_clients ({self.client.num_clients})"
            )
        name = self.topology.schema_
        if self.secure_aggregation is not None and not SCHEMAS.get(name).round_driven:
            raise ValueError(
                f"secure_aggregation: the {name} schema has no server to aggregate for; "
                "secure aggregation needs a round-driven schema (star or hierarchical)"
            )
        return self

    @model_validator(mode="after")
    def _sites_host_the_clients(self) -> FederationConfig:
        sites, resources = self.sites, self.resources
        if self.federation.runtime == "sites" and (sites is None or sites.home is None):
            raise ValueError(
                "runtime 'sites' needs a [sites] table with home (the federation home of "
                "'redfl sites init'), listen and expected"
            )
        if sites is None:
            return self
        count = len(sites.expected)
        if self.client.num_clients != count:
            raise ValueError(
                f"client.num_clients ({self.client.num_clients}) must equal the number of "
                f"sites.expected ({count}): site i hosts client i"
            )
        workers = len(resources.bundles) if resources.split == "explicit" else None
        workers = resources.num_workers if workers is None else workers
        if workers not in (None, count):
            raise ValueError(
                f"resources: {workers} workers for {count} sites; each site's client runs on "
                "a worker of its own in every runtime (leave resources.num_workers out)"
            )
        return self


def parse_config(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> FederationConfig:
    """Validate a config dict; ``overrides`` replace keys of the ``[federation]`` table.

    Raises
    ------
    ConfigError
        ``invalid config: ...`` naming every bad field.
    """
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

    A relative path in a ``[topology]`` field that names a file (``topology_file``,
    ``tree_file``) is read from the config file's folder.

    Raises
    ------
    ConfigError
        If the file is missing, is not TOML, or holds a bad value.
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
    if isinstance(topology, dict) and schema(topology) in SCHEMAS:
        table = SCHEMAS.get(schema(topology)).config
        data["topology"] = _from_folder(topology, table, path.parent)
    if isinstance(data.get("sites"), dict):
        data["sites"] = _from_folder(data["sites"], SitesConfig, path.parent)
    return parse_config(data, overrides)


def _from_folder(table: dict[str, Any], model: type[Strict], folder: Path) -> dict[str, Any]:
    """``table`` with each relative path in a field ``model`` marks as a server file read
    from ``folder`` (the config file's)."""
    for key, info in model.model_fields.items():
        extra = info.json_schema_extra
        name = table.get(info.alias or key)
        if isinstance(extra, dict) and extra.get("server_file") and isinstance(name, str):
            table = {**table, info.alias or key: str(folder / name) if name else name}
    return table
