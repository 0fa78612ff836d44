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
  parameters are checked now rather than when the run starts;
- ``client.options`` are validated by the client class's ``Options`` model, as the run
  would validate them: the bundled examples' always (importing ``redfl.examples`` code, part
  of redfl), an operator package's only with ``check_allowed_options`` (which imports it);
  the options the operator caps (``option_limits``: the cost knobs, such as ``epochs``) must
  stay within their limits, defaults included;
- ``[resources]`` must fit the cluster's machines when they are known (a GPU asked of a
  cluster without one, more CPUs than any machine has);
- a ``[sites]`` table may not name its ``home`` or another ``listen`` than the operator's
  ``sites_listen``: its runs use the platform's federation home (:mod:`redfl.platform.sites`)
  and listen where the operator says.

Only then may the executor import the named code. Each refusal is a :class:`WebConfigError`
naming the field, its value and what is allowed. A config nested too deeply (a parser's
recursion) is refused as malformed.

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
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from redfl.core.config import ConfigError, OptionsError, node_options
from redfl.core.imports import (
    ImportNotAllowedError,
    check_import_allowed,
    import_targets,
    marked_fields,
    resolve,
)
from redfl.platform.settings import BUNDLED_PACKAGE, Settings
from redfl.run.build import strategy_from_config
from redfl.run.config import FederationConfig, parse_config
from redfl.runtime.registry import RUNTIMES
from redfl.runtime.resources import ResourceError, check_cluster_fit
from redfl.schemas import SCHEMAS

MAX_DEPTH = 64
"""How deeply tables and arrays of a web config may nest."""


class WebConfigError(ConfigError):
    """A web config that is malformed, invalid or not allowed; ``field`` names the key."""

    def __init__(self, field: str, message: str, named: bool = False) -> None:
        """``message`` says what is wrong with ``field``; ``named``: it names the field (or
        several) itself, and is the whole message."""
        super().__init__(f"{field}: {message}" if field and not named else message)
        self.field = field


def nesting_depth(data: Any) -> int:
    """How deeply ``data``'s dicts and lists nest (walked without recursion)."""
    deepest, stack = 0, [(data, 0)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level + 1)
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, level + 1) for item in items)
    return deepest


def _load(text: str, fmt: str) -> dict[str, Any]:
    try:
        data: Any = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise WebConfigError("config", f"not valid {fmt.upper()}: {error}") from None
    except RecursionError:
        raise WebConfigError("config", f"nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(data, dict):
        raise WebConfigError("config", f"must be a {fmt.upper()} table/object")
    if nesting_depth(data) > MAX_DEPTH:
        raise WebConfigError("config", f"nested more than {MAX_DEPTH} levels deep")
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


def _bundled(target: str) -> bool:
    module = target.split(":", 1)[0]
    return module == BUNDLED_PACKAGE or module.startswith(BUNDLED_PACKAGE + ".")


def _check_options(config: FederationConfig, settings: Settings) -> None:
    """``client.options`` against the client's ``Options`` model (when its code may be
    imported here) and against the operator's ``option_limits``."""
    target = config.client.target
    values: Mapping[str, Any] = config.client.options
    if _bundled(target) or settings.check_allowed_options:
        try:
            template = resolve(target, "client.target", settings.client_packages)
            checked = node_options(template, config.client.options, "client.options")
        except OptionsError as error:
            detail = str(error).removeprefix("invalid config: ")
            raise WebConfigError(error.field, detail, named=True) from None
        except ConfigError as error:
            raise WebConfigError("client.target", str(error).split(": ", 1)[-1]) from None
        values = checked.model_dump() if isinstance(checked, BaseModel) else checked
    for knob, limit in settings.option_limits.items():
        value = values.get(knob)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > limit:
            raise WebConfigError(
                f"client.options.{knob}",
                f"{value:g} exceeds the operator's limit {limit:g} (option_limits.{knob})",
            )


def _check_cluster(config: FederationConfig, machines: Sequence[Mapping[str, float]]) -> None:
    """``[resources]`` against the machines of the cluster (runtimes with workers only)."""
    if not RUNTIMES.get(config.federation.runtime).supervised or config.sites is not None:
        return  # in-process, or on the sites' machines: no workers to place here
    try:
        check_cluster_fit(config.resources, config.client.num_clients, machines)
    except ResourceError as error:
        raise WebConfigError(error.field, str(error)) from None


def with_platform_sites(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The raw web config ``data`` with its ``[sites]`` table (if any) on the platform's
    federation home and listen address.

    Raises
    ------
    WebConfigError
        If the table names a home (a folder on the server) or another listen address than
        the operator's ``sites_listen``.
    """
    table = data.get("sites")
    if not isinstance(table, dict):
        return data  # none, or not a table: the config's own validation names it
    if "home" in table:
        raise WebConfigError(
            "sites.home", "not allowed in a web config (the platform's federation home is used)"
        )
    listen = table.get("listen", settings.sites_listen)
    if listen != settings.sites_listen:
        raise WebConfigError(
            "sites.listen",
            f"the platform's sites connect to {settings.sites_listen}; leave it out "
            f"(got {listen!r})",
        )
    home = str(settings.sites_home.resolve())
    return {**data, "sites": {**table, "home": home, "listen": settings.sites_listen}}


def parse_web_config(
    text: str,
    fmt: str,
    settings: Settings,
    machines: Sequence[Mapping[str, float]] | None = None,
) -> FederationConfig:
    """The validated config of a web request, or a :class:`WebConfigError` saying why not.

    ``machines``: each machine's total resources of the cluster runs execute on (see
    :class:`redfl.platform.cluster.ClusterView`); ``None``: resources are not checked.
    """
    if fmt not in ("toml", "json"):
        raise WebConfigError("format", f"must be 'toml' or 'json', got {fmt!r}")
    data = with_platform_sites(_load(text, fmt), settings)
    try:
        config = parse_config(data)
    except ConfigError as error:
        raise WebConfigError("", str(error)) from None
    if config.federation.address is not None:
        raise WebConfigError(
            "federation.address", "not allowed in a web config (the server chooses the cluster)"
        )
    for field, _ in marked_fields(config, "server_file"):
        if field != "sites.home":  # the platform's own, set above
            raise WebConfigError(field, "not allowed in a web config (no server files)")
    _check_targets(config, settings.client_packages)
    _check_caps(config, settings)
    if SCHEMAS.get(config.topology.schema_).round_driven:
        try:  # no user code, no Ray
            strategy_from_config(config, settings.client_packages)
        except ConfigError as error:
            raise WebConfigError("", str(error)) from None
    _check_options(config, settings)
    if machines is not None:
        _check_cluster(config, machines)
    return config
