"""Everything a run checks and builds before its folder exists, and what it reports after.

:func:`prepare` validates the config, imports its targets, builds the (lazy, not started)
federation and checks node options on the driver, so that every config error surfaces
before the run folder is created. :class:`Prepared` then knows how to describe the run:
its notes (e.g. a strategy that raised the round size), its summary and the model file's
metadata.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from redfl.algorithms.strategy import round_size
from redfl.core.arrays import Parameters, copy_parameters
from redfl.core.config import ConfigError, FederationConfig, load_config, parse_config
from redfl.core.digest import config_digest
from redfl.core.result import RoundRecord
from redfl.run.checkpoints import Stateful
from redfl.schemas.builder import federation_from_config, resolve
from redfl.schemas.decentralized import DecentralizedFederation
from redfl.schemas.star import StarFederation

AnyFederation = StarFederation | DecentralizedFederation


@dataclass
class Prepared:
    """A validated config and its federation, ready to run."""

    config: FederationConfig
    federation: AnyFederation
    notes: list[str] = field(default_factory=list)

    def connect(self) -> None:
        """Join Ray now (bounded by ``federation.connect_timeout``) for the ray runtime."""
        run = self.config.federation
        if run.runtime == "ray":
            from redfl.runtime.connect import ensure_ray

            ensure_ray(run.address, run.connect_timeout)

    def history(self) -> list[RoundRecord]:
        """The rounds the federation completed so far."""
        return list(self.federation.history)

    def last_parameters(self) -> Parameters | None:
        """The star's global model after its last completed round (``None`` before any)."""
        if isinstance(self.federation, StarFederation) and self.federation.history:
            return copy_parameters(self.federation.parameters)
        return None

    def digest(self) -> str:
        """The config's digest: the same for configs that give the same results."""
        return config_digest(self.config)

    @property
    def stateful(self) -> Stateful | None:
        """The federation, when its server state can be saved and loaded."""
        return self.federation

    def summary(
        self, history: list[RoundRecord], wall: float, status: str, error: str | None
    ) -> dict[str, Any]:
        """What ``summary.json`` holds.

        ``seconds_per_round`` is the mean of the rounds' own ``seconds`` (the per-round
        lines); ``wall_seconds`` also counts starting the workers and stopping them.
        """
        final = history[-1] if history else None
        seconds = [r.seconds for r in history]
        return {
            "status": status,
            "error": error,
            "name": self.config.federation.name,
            "schema": self.config.topology.schema_,
            "federation_id": self.federation.federation_id,
            "rounds": len(history),
            "rounds_planned": self.config.federation.rounds,
            "clients": self.config.client.num_clients,
            "accuracy": None if final is None else final.accuracy,
            "loss": None if final is None else final.loss,
            "train_loss": None if final is None else final.train_loss,
            "failures": sum(r.failed for r in history),
            "wall_seconds": round(wall, 3),
            "seconds_per_round": round(sum(seconds) / len(seconds), 4) if seconds else None,
            "epsilon": None if final is None else final.metrics.get("epsilon"),
            "config_digest": self.digest(),
            "notes": list(self.notes),
        }

    def model_metadata(self, history: list[RoundRecord]) -> dict[str, Any]:
        """The model file's metadata: only what the same config and seed reproduce."""
        final = history[-1] if history else None
        return {
            "name": self.config.federation.name,
            "rounds": len(history),
            "clients": self.config.client.num_clients,
            "seed": self.config.federation.seed,
            "accuracy": None if final is None else final.accuracy,
            "config_digest": self.digest(),
        }


def prepare(
    config: str | Path | Mapping[str, Any] | FederationConfig,
    overrides: Mapping[str, Any] | None = None,
) -> Prepared:
    """Validate ``config`` and build its federation (nothing starts, nothing is written).

    Raises
    ------
    ConfigError
        Naming the field: a bad value, a target that does not import, a strategy
        parameter out of bounds, a bad topology file, a node option its class refuses.
    """
    _importable_here()
    if isinstance(config, FederationConfig):
        cfg = parse_config(config.model_dump(by_alias=True), dict(overrides or {}))
    elif isinstance(config, Mapping):
        cfg = parse_config(dict(config), dict(overrides or {}))
    else:
        cfg = load_config(config, dict(overrides or {}))
    try:
        federation = federation_from_config(cfg)
    except ConfigError:
        raise
    except ValueError as error:  # a constructor's check (roles, sizes, topology)
        raise ConfigError(str(error)) from None
    if isinstance(federation, DecentralizedFederation):
        _check_node_options(cfg)
        federation.checkpoint_every = cfg.federation.checkpoint_every
    return Prepared(cfg, federation, _notes(cfg, federation))


def saved_config(folder: Path) -> FederationConfig:
    """The config a run folder was made with (its ``config.json``).

    Raises
    ------
    ConfigError
        If ``folder`` is not a run folder.
    """
    path = folder / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"resume: {folder} is not a run folder ({path}: {error})") from None
    return parse_config(data)


def _importable_here() -> None:
    """Let ``client.target = "mymodule:Class"`` import from the current folder, as on the
    workers (:func:`redfl.runtime.connect.worker_env`)."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)


def _check_node_options(cfg: FederationConfig) -> None:
    """Build one node on the driver so that a bad option fails here, not on a worker."""
    node = resolve(cfg.client.target, "client.target")
    options = dict(cfg.client.options)
    if isinstance(getattr(node, "Options", None), type) and issubclass(node.Options, BaseModel):
        return  # validated by its Options model already
    try:
        inspect.signature(node).bind(**options)
        node(**options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"client.options: {node.__name__}: {error}") from None


def _notes(cfg: FederationConfig, federation: AnyFederation) -> list[str]:
    """Things the user should know before the run: a round size the strategy raised."""
    notes: list[str] = []
    if isinstance(federation, StarFederation):
        strategy = federation.strategy
        available = len(federation.train_ids)
        asked = round_size(available, strategy.fraction_fit, 1)
        actual = round_size(available, strategy.fraction_fit, strategy.min_fit_clients)
        if actual > asked:
            notes.append(
                f"{type(strategy).__name__} needs min_fit_clients={strategy.min_fit_clients}, "
                f"so each round trains {actual} of {available} clients, not the {asked} "
                f"that fraction_fit={strategy.fraction_fit:g} gives"
            )
    return notes
