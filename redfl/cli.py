"""The ``redfl`` command line: ``redfl run CONFIG.toml``, ``redfl strategies``.

Exit codes: 0 done, 1 the federation failed while running, 2 bad input (config, file,
option), each with a one-line reason on stderr.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from redfl.algorithms.registry import STRATEGIES
from redfl.core.config import ConfigError, load_config
from redfl.core.result import FederationError, FederationResult, RoundRecord
from redfl.rundir import MetricsWriter, new_run_dir, save_parameters, write_summary
from redfl.runtime.resources import ResourceError
from redfl.schemas.builder import federation_from_config
from redfl.schemas.callbacks import Callback

app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, help=__doc__
)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """redfl: federated learning on Ray."""


class ProgressBar(Callback):
    """A rich progress bar over rounds, with clients done, loss and accuracy."""

    def __init__(self, rounds: int) -> None:
        self.progress = Progress(
            TextColumn("round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("rounds", total=rounds, detail="starting workers")
        self.rounds = rounds

    def on_train_begin(self, rounds: int) -> None:
        """Show the bar."""
        self.progress.start()

    def on_clients_done(self, rnd: int, done: int, sampled: int) -> None:
        """Update the clients count."""
        self.progress.update(self.task, detail=f"clients {done}/{sampled}")

    def on_round_end(self, record: RoundRecord) -> None:
        """Advance the bar and print the round's line."""
        detail = _describe(record)
        self.progress.update(self.task, advance=1, detail=detail)
        self.progress.console.print(f"round {record.round}/{self.rounds}  {detail}")

    def on_train_end(self, result: FederationResult) -> None:
        """Hide the bar."""
        self.progress.stop()


def _describe(record: RoundRecord) -> str:
    parts = [f"clients {record.succeeded}/{record.sampled}"]
    if record.failed:
        parts.append(f"failed {record.failed}")
    if record.loss is not None:
        parts.append(f"loss {record.loss:.4f}")
    elif record.train_loss is not None:
        parts.append(f"train loss {record.train_loss:.4f}")
    if record.accuracy is not None:
        parts.append(f"accuracy {record.accuracy:.4f}")
    parts.append(f"{record.seconds:.2f} s")
    return "  ".join(parts)


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"redfl: error: {' '.join(message.split())}", err=True)
    return typer.Exit(code)


@app.command()
def run(
    config: Annotated[str, typer.Argument(help="Federation config (TOML).")],
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to join: auto or ray://host:port.")
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="Override federation.rounds.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override federation.seed.")] = None,
    out: Annotated[str | None, typer.Option(help="Run folder (default runs/<run-id>).")] = None,
) -> None:
    """Run the federation CONFIG describes (star or a decentralised graph); write metrics,
    summary and model."""
    overrides: dict[str, Any] = {
        k: v for k, v in (("rounds", rounds), ("seed", seed), ("address", address)) if v is not None
    }
    try:
        cfg = load_config(config, overrides)
        run_dir = Path(out) if out else new_run_dir("runs", cfg.federation.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        total = cfg.federation.rounds
        writer = MetricsWriter(run_dir / "metrics.jsonl")
        federation = federation_from_config(cfg, [ProgressBar(total), writer])
    except (ConfigError, ValueError) as error:
        raise _fail(2, str(error)) from None
    except OSError as error:
        raise _fail(2, f"cannot write the run folder: {error}") from None
    (run_dir / "config.json").write_text(
        cfg.model_dump_json(indent=2, by_alias=True) + "\n", encoding="utf-8"
    )
    console.print(f"redfl: run folder {run_dir}")
    started = time.perf_counter()
    try:
        result = federation.train(total)
    except (FederationError, ResourceError, ConnectionError) as error:
        raise _fail(1, str(error)) from None
    finally:
        federation.stop()
    wall = time.perf_counter() - started
    final = result.final
    summary = {
        "federation_id": federation.federation_id,
        "rounds": len(result.history),
        "clients": cfg.client.num_clients,
        "accuracy": None if final is None else final.accuracy,
        "loss": None if final is None else final.loss,
        "train_loss": None if final is None else final.train_loss,
        "failures": len(result.failures),
        "wall_seconds": round(wall, 3),
        "seconds_per_round": round(wall / max(1, len(result.history)), 4),
        "epsilon": None if final is None else final.metrics.get("epsilon"),
    }
    write_summary(run_dir / "summary.json", summary)
    assert result.parameters is not None
    save_parameters(run_dir / "model.safetensors", result.parameters, summary)
    accuracy = "n/a" if summary["accuracy"] is None else f"{summary['accuracy']:.4f}"
    typer.echo(
        f"final accuracy {accuracy} after {summary['rounds']} rounds, "
        f"{summary['clients']} clients, {wall:.1f} s; wrote {run_dir}"
    )


@app.command()
def strategies() -> None:
    """List the strategies: name, paper, pre-aggregation on workers, parameters and defaults."""
    for spec in STRATEGIES.values():
        params = ", ".join(f"{k}={v!r}" for k, v in spec.parameters().items()) or "-"
        where = "pre-aggregates on workers" if spec.pre_aggregates else "individual updates"
        typer.echo(f"{spec.name:<14} {spec.cls.__name__:<14} {spec.paper}; {where}")
        typer.echo(f"{'':<14} parameters: {params}")
    typer.echo(
        "every strategy also takes: fraction_fit=1.0, min_fit_clients, fraction_evaluate=0.0, "
        "min_evaluate_clients=0, max_update_norm=None"
    )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()


from redfl.edge.cli import register  # noqa: E402

register(app)
