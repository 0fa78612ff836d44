"""``redfl tune CONFIG.toml --param PATH=KIND:ARGS ...``: a thin shell over :func:`redfl.tune`.

Prints one line per trial (its values, status, rounds, metric, run folder) and the best
config, and writes the same as ``tune.json`` in the output folder.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from redfl.commands.run_cmd import EXIT_BAD_INPUT, EXIT_FAILED, AddressOption, RoundsOption, fail
from redfl.core.config import ConfigError
from redfl.run.search_space import ALLOWED_FORMS, SearchSpaceError
from redfl.run.tuning import TrialOutcome, TuneOutcome
from redfl.run.tuning import tune as run_tune


def tune(
    config: Annotated[str, typer.Argument(help="Federation config (TOML).")],
    param: Annotated[
        list[str],
        typer.Option(
            help=f"PATH=KIND:ARGS, e.g. strategy.eta=loguniform:1e-3:1e-1 ({ALLOWED_FORMS})."
        ),
    ],
    samples: Annotated[int, typer.Option(help="Trials to draw (each grid multiplies).")] = 8,
    scheduler: Annotated[str, typer.Option(help="fifo, asha or pbt.")] = "fifo",
    metric: Annotated[str, typer.Option(help="Round metric to optimise.")] = "accuracy",
    mode: Annotated[str, typer.Option(help="max or min.")] = "max",
    out: Annotated[
        str | None, typer.Option(help="Folder of the trials' run folders (default runs/...).")
    ] = None,
    address: AddressOption = None,
    rounds: RoundsOption = None,
    workers: Annotated[int, typer.Option(help="Workers per trial.")] = 1,
    driver_cpus: Annotated[float, typer.Option(help="CPUs of each trial's driver.")] = 1.0,
    max_concurrent: Annotated[
        int | None, typer.Option(help="At most this many trials at once.")
    ] = None,
    grace_period: Annotated[int, typer.Option(help="ASHA: rounds before a stop.")] = 1,
    perturbation_interval: Annotated[int, typer.Option(help="PBT: rounds between exploits.")] = 1,
) -> None:
    """Search hyper-parameters of CONFIG with Ray Tune; one run folder per trial."""
    overrides: dict[str, Any] = {
        k: v for k, v in (("rounds", rounds), ("address", address)) if v is not None
    }
    try:
        outcome = run_tune(
            config,
            param,
            samples=samples,
            scheduler=scheduler,
            metric=metric,
            mode=mode,
            out=out,
            workers=workers,
            driver_cpus=driver_cpus,
            max_concurrent=max_concurrent,
            grace_period=grace_period,
            perturbation_interval=perturbation_interval,
            overrides=overrides,
        )
    except (SearchSpaceError, ConfigError) as error:
        raise fail(EXIT_BAD_INPUT, str(error)) from None
    except ConnectionError as error:
        raise fail(EXIT_FAILED, str(error)) from None
    for line in table(outcome):
        typer.echo(line)
    (outcome.out / "tune.json").write_text(
        json.dumps(to_json(outcome), indent=2) + "\n", encoding="utf-8"
    )
    if outcome.best is None:
        raise fail(EXIT_FAILED, f"no trial reported {metric!r}; see {outcome.out}")
    best = ", ".join(f"{k}={v!r}" for k, v in outcome.best.values.items())
    typer.echo(
        f"best {outcome.best.trial_id}: {metric} {outcome.best.metric:.4f} with {best}; "
        f"wrote {outcome.out}"
    )


def table(outcome: TuneOutcome) -> list[str]:
    """The results table: a header, then one line per trial, best metric first."""
    names = list(outcome.trials[0].values) if outcome.trials else []
    header = ["trial", *names, "status", "rounds", outcome.metric, "folder"]
    reverse = outcome.mode == "max"
    scored = sorted(
        outcome.trials,
        key=lambda t: (t.metric is None, -(t.metric or 0.0) if reverse else (t.metric or 0.0)),
    )
    rows = [header] + [_row(t, names) for t in scored]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]


def _row(trial: TrialOutcome, names: list[str]) -> list[str]:
    values = [_cell(trial.values.get(n)) for n in names]
    metric = "-" if trial.metric is None else f"{trial.metric:.4f}"
    return [trial.trial_id, *values, trial.status, str(trial.rounds), metric, str(trial.folder)]


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def to_json(outcome: TuneOutcome) -> dict[str, Any]:
    """``tune.json``: metric, mode, every trial and the best one's id."""
    return {
        "metric": outcome.metric,
        "mode": outcome.mode,
        "best": None if outcome.best is None else outcome.best.trial_id,
        "trials": [
            {
                "trial_id": t.trial_id,
                "values": t.values,
                "status": t.status,
                "rounds": t.rounds,
                "metric": t.metric,
                "folder": str(t.folder),
                "error": t.error,
            }
            for t in outcome.trials
        ],
    }
