"""Everything a run checks and builds before its folder exists, and what it reports after.

:func:`prepare` validates the config, imports its targets, builds the (lazy, not started)
federation and checks node options on the driver, so that every config error surfaces
before the run folder is created. :class:`Prepared` then knows how to describe the run:
its notes (e.g. a strategy that raised the round size), its summary and the model file's
metadata.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redfl.core.arrays import Parameters
from redfl.core.config import ConfigError
from redfl.core.events import RunStatus
from redfl.core.result import RoundRecord
from redfl.run.build import federation_from_config
from redfl.run.config import FederationConfig, load_config, parse_config
from redfl.run.digest import config_digest
from redfl.run.tracking import check_tracking
from redfl.runtime.registry import RUNTIMES, RuntimeOptions
from redfl.runtime.resources import ResourceError, check_cluster_fit
from redfl.schemas.base import Federation

if TYPE_CHECKING:
    from redfl.runtime.connect import RayConnection


@dataclass
class Prepared:
    """A validated config and its federation, ready to run."""

    config: FederationConfig
    federation: Federation
    notes: list[str] = field(default_factory=list)
    connection: RayConnection | None = None
    """What :meth:`connect` joined (``None`` before, and for runtimes other than ray)."""

    def connect(self) -> None:
        """Join Ray now (bounded by ``federation.connect_timeout``) for the ray runtime (a
        warm head joined becomes a note) and check that ``[resources]`` fits the joined
        cluster's machines; check what another runtime needs (the sites extra and trust home).

        Raises
        ------
        ConfigError
            Naming the ``[resources]`` key no machine of the cluster can ever satisfy (a GPU
            on a cluster without one), or what the runtime lacks, before the run folder
            exists.
        ConnectionError
            If the Ray cluster cannot be joined in time.
        """
        run = self.config.federation
        if run.runtime == "ray":
            from redfl.runtime.connect import cluster_machines, ensure_ray

            self.connection = ensure_ray(run.address, run.connect_timeout)
            note = self.connection.note()
            if note is not None:
                self.notes.append(note)
            spec, nodes = self.config.resources, self.config.client.num_clients
            try:
                check_cluster_fit(spec, nodes, cluster_machines())
            except ResourceError as error:
                raise ConfigError(f"invalid config: {error.field}: {error}") from None
        check = RUNTIMES.get(run.runtime).check
        if check is not None:
            options = RuntimeOptions(run.address, self.config.resources, self.config.sites)
            try:
                check(options)
            except ValueError as error:
                raise ConfigError(f"federation.runtime: {error}") from None

    def history(self) -> list[RoundRecord]:
        """The rounds the federation completed so far."""
        return list(self.federation.history)

    def last_parameters(self) -> Parameters | None:
        """The global model after the last completed round, when the schema keeps one on
        the driver (``None`` before any)."""
        return self.federation.model()

    def digest(self) -> str:
        """The config's digest: the same for configs that give the same results."""
        return config_digest(self.config)

    def summary(
        self, history: list[RoundRecord], wall: float, status: RunStatus, error: str | None
    ) -> dict[str, Any]:
        """What ``summary.json`` holds.

        ``seconds_per_round`` is the mean of the rounds' own ``seconds`` (the per-round
        lines); ``wall_seconds`` also counts starting the workers and stopping them.
        ``ray_session`` is the Ray session folder that holds Ray's full logs of the run.
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
            "secure_aggregation": self.secure_summary(final),
            "config_digest": self.digest(),
            "notes": list(self.notes),
            "ray_session": None if self.connection is None else self.connection.session_dir,
        }

    def secure_summary(self, final: RoundRecord | None) -> dict[str, Any]:
        """Whether secure aggregation was on and with which parameters: the table's (with
        the bits used), and the graph degree and threshold of the last round (chosen from
        its clients)."""
        table = self.config.secure_aggregation
        if table is None:
            return {"enabled": False}
        chosen = {} if final is None else final.metrics
        picked = {
            key: int(chosen[f"secagg/{name}"]) if f"secagg/{name}" in chosen else None
            for key, name in (("round_neighbours", "neighbours"), ("round_threshold", "threshold"))
        }
        return {
            "enabled": True,
            **table.model_dump(mode="json"),
            "bits": table.entry_bits,
            **picked,
        }

    def model_metadata(self, history: list[RoundRecord]) -> dict[str, Any]:
        """The model file's metadata: only what the same config and seed reproduce.

        ``client`` names the class that trained the model and its options, so that the
        file alone is enough to serve it (:mod:`redfl.run.serving`).
        """
        final = history[-1] if history else None
        client = self.config.client
        return {
            "name": self.config.federation.name,
            "client": {"target": client.target, "options": client.options},
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
        parameter out of bounds, a bad topology file, a node option its class refuses, a
        tracker whose package is missing.
    """
    _importable_here()
    if isinstance(config, FederationConfig):
        cfg = parse_config(config.model_dump(by_alias=True), dict(overrides or {}))
    elif isinstance(config, Mapping):
        cfg = parse_config(dict(config), dict(overrides or {}))
    else:
        cfg = load_config(config, dict(overrides or {}))
    check_tracking(cfg.tracking)
    federation = federation_from_config(cfg)
    federation.checkpoint_every = cfg.federation.checkpoint_every
    return Prepared(cfg, federation, federation.notes())


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
    workers (:func:`redfl.runtime.connect.worker_path`)."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)
