"""``redfl.tune``: hyper-parameter search over runs of one config, on Ray Tune.

Each trial is :func:`redfl.run` on the config with the trial's values set at their dotted
paths (:mod:`redfl.run.search_space`), and writes its own run folder ``OUT/<trial id>``.
Its federation's workers live in the trial's placement group (bundle 0 holds the trial's
driver; ``resources.placement_group = "current"``). Every round is reported to Tune with a
checkpoint, so ASHA can stop a bad trial after any round and PBT can restart a trial from
another's checkpoint.

A checkpoint is the whole server state after the round (:mod:`redfl.run.tune_report`):
the trial's run saves it every round (``federation.checkpoint_every = 1``). A trial that
starts from one (a PBT exploit, a retried or restored trial) loads all of it (round,
parameters, strategy state such as FedAdam's moments or the DP clipping norm and
accountant, history, failures, stateful clients' states) into a new run folder,
``OUT/<trial id>-from-round-<k>``, and runs rounds ``k+1, ...`` as the donor would have,
with its own (mutated) values in effect. Its config may differ from the donor's only in
the values PBT mutates (the ``--param`` s that are not ``grid``); any other difference is
refused, naming the fields. A trial ASHA stops ends with its process: its folder keeps
``config.json``, ``events.jsonl``, ``metrics.jsonl`` and checkpoints up to that round, no
summary.
The Ray-facing half is :mod:`redfl.runtime.tune`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from redfl.core.config import ConfigError
from redfl.run.api import run
from redfl.run.config import FederationConfig, parse_config
from redfl.run.prepare import prepare
from redfl.run.search_space import apply_params, example_values, parse_params
from redfl.run.tune_report import TuneReporter, load_checkpoint
from redfl.schemas import SCHEMAS

if TYPE_CHECKING:
    from redfl.runtime.tune import TrialContext

MODES = ("max", "min")


@dataclass(frozen=True)
class TrialSettings:
    """What every trial shares: the validated config tables and where runs go."""

    base: dict[str, Any]
    out: str
    rounds: int
    metric: str
    workers: int
    mutable: tuple[str, ...] = ()
    """The dotted paths PBT may mutate: a restored trial's config may differ there."""


TrialStatus = Literal["completed", "stopped", "error"]
"""How a trial ended: all its rounds, stopped by the scheduler, or an error."""


@dataclass
class TrialOutcome:
    """One trial: its values, how far it got, its last metric, its run folder."""

    trial_id: str
    values: dict[str, Any]
    status: TrialStatus
    rounds: int
    metric: float | None
    folder: Path
    error: str | None = None


@dataclass
class TuneOutcome:
    """Every trial and the best one (by ``metric`` and ``mode``; ``None`` if none has it)."""

    trials: list[TrialOutcome]
    best: TrialOutcome | None
    metric: str
    mode: str
    out: Path


def run_trial(values: dict[str, Any], context: TrialContext, settings: TrialSettings) -> None:
    """One trial (called by :mod:`redfl.runtime.tune` in the trial's bundle 0).

    Raises
    ------
    ConfigError
        If the checkpoint it starts from was made with a config that differs from this
        trial's in more than the mutated values (naming the fields).
    """
    fixed = {
        "resources.placement_group": "current",
        "resources.num_workers": settings.workers,
        "federation.rounds": settings.rounds,
        "federation.checkpoint_every": 1,
    }
    config = apply_params(apply_params(settings.base, values), fixed)
    state = None
    if context.checkpoint is not None:
        state = load_checkpoint(context.checkpoint, parse_config(config), settings.mutable)
        if state.round >= settings.rounds:
            return
    name = context.trial_id if state is None else f"{context.trial_id}-from-round-{state.round}"
    folder = Path(settings.out) / name
    reporter = TuneReporter(context.report, settings.metric, folder / "config.json")
    outcome = run(config, out=folder, callbacks=[reporter], start=state)
    if outcome.status == "failed":
        raise RuntimeError(f"trial {context.trial_id} failed: {outcome.error}")


def tune(
    config: str | Path | Mapping[str, Any] | FederationConfig,
    params: Sequence[str],
    *,
    samples: int = 8,
    scheduler: str = "fifo",
    metric: str = "accuracy",
    mode: str = "max",
    out: str | Path | None = None,
    workers: int = 1,
    driver_cpus: float = 1.0,
    max_concurrent: int | None = None,
    grace_period: int = 1,
    perturbation_interval: int = 1,
    overrides: Mapping[str, Any] | None = None,
    runs_root: str | Path = "runs",
) -> TuneOutcome:
    """Search ``params`` over runs of ``config`` with Ray Tune; a run folder per trial.

    Parameters
    ----------
    config:
        A TOML path, a dict of the same tables, or a validated config (as :func:`redfl.run`).
    params:
        ``PATH=KIND:ARGS`` specs (:mod:`redfl.run.search_space`), e.g.
        ``"strategy.eta=loguniform:1e-3:1e-1"``.
    samples:
        Trials to draw (each ``grid`` multiplies them).
    scheduler:
        ``fifo`` (every trial runs all rounds), ``asha`` (stops trials that trail after
        ``grace_period`` rounds or more) or ``pbt`` (every ``perturbation_interval``
        rounds, the worse half restarts from the better half's checkpoints with mutated
        values).
    metric, mode:
        The round metric to optimise (``accuracy``, ``loss``, ``train_loss`` or a key of
        the record's metrics) and ``max`` or ``min``.
    out:
        The folder of the trials' run folders and Tune's files (``out/tune``); default
        ``runs_root/<name>-tune-<time>``.
    workers, driver_cpus:
        Each trial's placement group: ``[{CPU: driver_cpus}]`` then ``workers`` copies of
        ``resources.worker``.
    max_concurrent:
        At most this many trials at once (default: as many as the cluster holds).

    Raises
    ------
    ConfigError
        A bad config, option or parameter (naming it); nothing has started.
    SearchSpaceError
        A ``--param`` spec that does not parse.
    """
    specs = parse_params(params)
    _check_options(samples, scheduler, mode, workers, driver_cpus, grace_period)
    prepared = prepare(config, overrides)
    base = prepared.config.model_dump(by_alias=True)
    trial_config = apply_params(base, example_values(specs))
    trial_config["resources"] = {**trial_config["resources"], "num_workers": workers}
    prepare(trial_config)  # a path or value the trials would refuse fails here, once
    schema = prepared.config.topology.schema_
    if scheduler == "pbt" and not SCHEMAS.get(schema).round_driven:
        raise ConfigError(
            f"scheduler: 'pbt' restores a global model, so it needs a round-driven schema "
            f"(star or hierarchical), not {schema!r}"
        )
    prepared.connect()
    from redfl.runtime import tune as ray_tune

    rounds = prepared.config.federation.rounds
    try:
        chosen = ray_tune.scheduler_for(
            scheduler, specs, rounds, grace_period, perturbation_interval
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    name = prepared.config.federation.name
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = Path(out) if out is not None else Path(runs_root) / f"{name}-tune-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    mutable = tuple(p.name for p in specs if p.kind != "grid")
    settings = TrialSettings(base, str(folder.resolve()), rounds, metric, workers, mutable)
    worker = {k: float(v) for k, v in prepared.config.resources.worker.items() if v}
    results = ray_tune.run_trials(
        partial(run_trial, settings=settings),
        specs,
        bundles=[{"CPU": driver_cpus}] + [worker] * workers,
        samples=samples,
        scheduler=chosen,
        metric=metric,
        mode=mode,
        storage=folder,
        max_concurrent=max_concurrent,
    )
    trials = [_outcome(r, rounds, metric, folder) for r in results]
    scored = [t for t in trials if t.metric is not None]
    best = None
    if scored:
        pick = max if mode == "max" else min
        best = pick(scored, key=lambda t: t.metric if t.metric is not None else 0.0)
    return TuneOutcome(trials, best, metric, mode, folder)


def _check_options(
    samples: int, scheduler: str, mode: str, workers: int, driver_cpus: float, grace: int
) -> None:
    checks = [
        (samples >= 1, f"samples: must be at least 1, got {samples}"),
        (
            scheduler in ("fifo", "asha", "pbt"),
            f"scheduler: must be fifo, asha or pbt, got {scheduler!r}",
        ),
        (mode in MODES, f"mode: must be max or min, got {mode!r}"),
        (workers >= 1, f"workers: must be at least 1, got {workers}"),
        (driver_cpus > 0, f"driver_cpus: must be above 0, got {driver_cpus:g}"),
        (grace >= 1, f"grace_period: must be at least 1, got {grace}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _outcome(result: Any, rounds: int, metric: str, folder: Path) -> TrialOutcome:
    done = int(result.metrics.get("round", 0))
    value = result.metrics.get(metric)
    status: TrialStatus = "error" if result.error else "completed" if done >= rounds else "stopped"
    return TrialOutcome(
        result.trial_id,
        result.values,
        status,
        done,
        None if value is None else float(value),
        folder / result.trial_id,
        result.error,
    )
