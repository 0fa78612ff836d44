"""Ray Tune, the Ray-facing half of ``redfl tune`` (the other half is :mod:`redfl.run.tuning`).

:func:`run_trials` turns :class:`~redfl.run.search_space.ParamSpec` s into Tune's search
space, builds the scheduler (``fifo``, ``asha``, ``pbt``) and runs one trial function per
sampled configuration. Each trial holds one placement group
(``tune.PlacementGroupFactory``): bundle 0 for the trial's driver (the function), bundles
1, 2, ... for its federation's workers, which a federation configured with
``resources.placement_group = "current"`` schedules there instead of reserving its own.
When the trial ends, or a scheduler stops it, Tune removes that group and with it every
worker of the trial.

The trial function gets a :class:`TrialContext`: its id, the directory of the checkpoint
to restore (a PBT exploit, a retry) and a ``report`` function that sends one round's
metrics to Tune with a checkpoint directory the caller fills.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from ray import tune
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

SCHEDULERS = ("fifo", "asha", "pbt")
"""The schedulers ``redfl tune --scheduler`` accepts."""
TIME_ATTR = "training_iteration"
"""Tune's clock: one report (one federated round) per tick."""

Writer = Callable[[Path], None]
"""Fills a checkpoint directory (the round's state)."""
Reporter = Callable[[Mapping[str, float], Writer | None], None]
"""Sends one round's metrics to Tune, with a checkpoint when a writer is given."""


class ParamSpec(Protocol):
    """A searched value (:class:`redfl.run.search_space.ParamSpec` is one)."""

    @property
    def name(self) -> str:
        """The dotted path into the config."""

    @property
    def kind(self) -> str:
        """``uniform``, ``loguniform``, ``randint``, ``choice`` or ``grid``."""

    @property
    def low(self) -> float:
        """The lower bound (ranges)."""

    @property
    def high(self) -> float:
        """The upper bound (ranges)."""

    @property
    def values(self) -> tuple[Any, ...]:
        """The values (``choice``, ``grid``)."""


@dataclass(frozen=True)
class TrialContext:
    """What a trial function gets from Tune.

    Attributes
    ----------
    trial_id:
        Tune's id of the trial (unique in the experiment).
    checkpoint:
        The checkpoint directory to resume from, or ``None`` for a fresh start.
    report:
        Call it once per round: ``report(metrics, writer)``; ``writer(folder)`` fills the
        checkpoint directory.
    """

    trial_id: str
    checkpoint: Path | None
    report: Reporter


TrialFn = Callable[[dict[str, Any], TrialContext], None]
"""A trial: the sampled values (dotted path -> value) and its context."""


@dataclass
class TrialResult:
    """One trial as Tune left it: its values, last metrics, error."""

    trial_id: str
    values: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _report(metrics: Mapping[str, float], writer: Writer | None) -> None:
    if writer is None:
        tune.report(dict(metrics))
        return
    with tempfile.TemporaryDirectory(prefix="redfl-ckpt-") as folder:
        writer(Path(folder))
        tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(folder))


def redfl_trial(values: dict[str, Any], trial: TrialFn) -> None:
    """The function Tune runs in bundle 0 of each trial's placement group."""
    trial_id = tune.get_context().get_trial_id() or "trial"
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        trial(dict(values), TrialContext(trial_id, None, _report))
        return
    with checkpoint.as_directory() as folder:
        trial(dict(values), TrialContext(trial_id, Path(folder), _report))


def domain(param: ParamSpec) -> Any:
    """Tune's search domain for ``param``."""
    if param.kind == "uniform":
        return tune.uniform(param.low, param.high)
    if param.kind == "loguniform":
        return tune.loguniform(param.low, param.high)
    if param.kind == "randint":
        return tune.randint(int(param.low), int(param.high))
    if param.kind == "choice":
        return tune.choice(list(param.values))
    return tune.grid_search(list(param.values))


def scheduler_for(
    name: str,
    params: Sequence[ParamSpec],
    max_t: int,
    grace_period: int,
    perturbation_interval: int,
) -> Any:
    """The Tune scheduler ``name`` names (``None`` for ``fifo``).

    Raises
    ------
    ValueError
        An unknown name, or ``pbt`` with nothing it may mutate (only ``grid`` params).
    """
    if name == "fifo":
        return None
    if name == "asha":
        grace = max(1, min(grace_period, max_t))
        return ASHAScheduler(time_attr=TIME_ATTR, max_t=max_t, grace_period=grace)
    if name == "pbt":
        mutations = {p.name: domain(p) for p in params if p.kind != "grid"}
        if not mutations:
            raise ValueError("scheduler 'pbt' needs a --param that is not a grid to mutate")
        return PopulationBasedTraining(
            time_attr=TIME_ATTR,
            perturbation_interval=perturbation_interval,
            hyperparam_mutations=mutations,
            quantile_fraction=0.5,
            synch=True,
            custom_explore_fn=partial(within_bounds, params),
        )
    raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {name!r}")


def within_bounds(params: Sequence[ParamSpec], config: dict[str, Any]) -> dict[str, Any]:
    """Clip each range value of ``config`` into its spec's bounds (PBT's perturbations
    multiply values by 0.8 or 1.2, which can leave the range the user gave)."""
    for param in params:
        value = config.get(param.name)
        if param.kind in ("uniform", "loguniform") and isinstance(value, int | float):
            config[param.name] = min(max(float(value), param.low), param.high)
        elif param.kind == "randint" and isinstance(value, int | float):
            config[param.name] = int(min(max(round(value), param.low), param.high - 1))
    return config


def run_trials(
    trial: TrialFn,
    params: Sequence[ParamSpec],
    *,
    bundles: Sequence[Mapping[str, float]],
    samples: int,
    scheduler: Any,
    metric: str,
    mode: str,
    storage: Path,
    max_concurrent: int | None = None,
) -> list[TrialResult]:
    """Run ``samples`` trials (times each grid's size) of ``trial`` and collect them.

    ``bundles`` is each trial's placement group: bundle 0 for the trial function, the
    rest for its workers. Tune's own files (results, checkpoints) go under
    ``storage / "tune"``.
    """
    factory = tune.PlacementGroupFactory([dict(b) for b in bundles], strategy="PACK")
    trainable = tune.with_resources(tune.with_parameters(redfl_trial, trial=trial), factory)
    tuner = tune.Tuner(
        trainable,
        param_space={p.name: domain(p) for p in params},
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=samples,
            scheduler=scheduler,
            max_concurrent_trials=max_concurrent,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(storage.resolve()),
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4),
        ),
    )
    grid = tuner.fit()
    results: list[TrialResult] = []
    for index in range(len(grid)):
        result = grid[index]
        metrics = dict(result.metrics or {})
        trial_id = str(metrics.get("trial_id") or Path(str(result.path)).name)
        values = {p.name: (result.config or {}).get(p.name) for p in params}
        error = None if result.error is None else " ".join(str(result.error).split())[:500]
        results.append(TrialResult(trial_id, values, metrics, error))
    return results
