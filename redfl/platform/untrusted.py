"""Configs from the web are untrusted: validate them without importing anything.

A web config is parsed (TOML or JSON) and validated by the CLI's own model
(:class:`redfl.run.config.FederationConfig`, which imports no user code), then:

- every code target (``client.target``, ``strategy.target``, ``evaluation.central``) must
  lie in an allowed package: ``redfl.examples`` or one the operator named
  (``allowed_packages``);
- ``federation.address`` and every field that names a file on the server
  (``topology.topology_file``, ``topology.tree_file``) are refused: the operator chooses
  the cluster, and a web user may not name files on the server;
- the size is capped by the operator's ``max_clients``, ``max_rounds`` and ``max_workers``;
- a round-driven schema's strategy is built as ``redfl run`` builds it (pure code), so its
  parameters are checked now rather than when the run starts.

Only then may the executor import the named code. Each refusal is a :class:`WebConfigError`
naming the field, its value and what is allowed.

Examples
--------
>>> from redfl.platform.settings import Settings
>>> text = '[client]\\ntarget = "os:system"\\nnum_clients = 2\\n'
>>> try:
...     parse_web_config(text, "toml", Settings())
... except WebConfigError as error:
...     print(error.field, "|", error)
client.target | client.target: module 'os' is not in an allowed package (allowed: redfl.examples)
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from redfl.core.config import ConfigError
from redfl.core.imports import (
    ImportNotAllowedError,
    check_import_allowed,
    import_targets,
    marked_fields,
)
from redfl.platform.settings import Settings
from redfl.run.build import strategy_from_config
from redfl.run.config import FederationConfig, parse_config
from redfl.schemas import SCHEMAS


class WebConfigError(ConfigError):
    """A web config that is malformed, invalid or not allowed; ``field`` names the key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


def _load(text: str, fmt: str) -> dict[str, Any]:
    try:
        data: Any = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise WebConfigError("config", f"not valid {fmt.upper()}: {error}") from None
    if not isinstance(data, dict):
        raise WebConfigError("config", f"must be a {fmt.upper()} table/object")
    return data


def _check_targets(config: FederationConfig, packages: tuple[str, ...]) -> None:
    """Every import path of the config (client, strategy, evaluation, ...) must lie in an
    allowed package; nothing is imported (:func:`redfl.core.imports.check_import_allowed`)."""
    for field, target in import_targets(config):
        try:
            check_import_allowed(target, packages)
        except ImportNotAllowedError:
            module = target.split(":", 1)[0]
            raise WebConfigError(
                field,
                f"module {module!r} is not in an allowed package (allowed: {', '.join(packages)})",
            ) from None


def _check_caps(config: FederationConfig, settings: Settings) -> None:
    workers = config.resources.num_workers or 0
    caps = (
        ("client.num_clients", config.client.num_clients, settings.max_clients, "max_clients"),
        ("federation.rounds", config.federation.rounds, settings.max_rounds, "max_rounds"),
        ("resources.num_workers", workers, settings.max_workers, "max_workers"),
        ("resources.bundles", len(config.resources.bundles), settings.max_workers, "max_workers"),
    )
    for field, value, cap, setting in caps:
        if value > cap:
            raise WebConfigError(field, f"{value} exceeds the operator's {setting} ({cap})")


def parse_web_config(text: str, fmt: str, settings: Settings) -> FederationConfig:
    """The validated config of a web request, or a :class:`WebConfigError` saying why not."""
    if fmt not in ("toml", "json"):
        raise WebConfigError("format", f"must be 'toml' or 'json', got {fmt!r}")
    data = _load(text, fmt)
    try:
        config = parse_config(data)
    except ConfigError as error:
        raise WebConfigError("", str(error)) from None
    if config.federation.address is not None:
        raise WebConfigError(
            "federation.address", "not allowed in a web config (the server chooses the cluster)"
        )
    for field, _ in marked_fields(config, "server_file"):
        raise WebConfigError(field, "not allowed in a web config (no server files)")
    _check_targets(config, settings.client_packages)
    _check_caps(config, settings)
    if SCHEMAS.get(config.topology.schema_).round_driven:
        try:  # no user code, no Ray
            strategy_from_config(config, settings.client_packages)
        except ConfigError as error:
            raise WebConfigError("", str(error)) from None
    return config
