"""``redfl run CONFIG.toml``: a thin shell over :func:`redfl.run`.

The first Ctrl-C cancels the run at the end of the current round (model, summary with
status ``cancelled``); a second one aborts at once. When the run is over, the embedded Ray
instance it started is stopped (or the cluster or warm head it joined is left) before the
final line, so that the process ends right after that line with no process of the run
left behind.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console

from redfl.commands.console import ConsoleReporter
from redfl.core.config import ConfigError
from redfl.run.api import run as run_federation

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130

console = Console(stderr=True)

AddressOption = Annotated[
    str | None, typer.Option(help="Ray cluster to join: auto, host:port or ray://host:port.")
]
"""``--address``, as ``redfl run`` and ``redfl tune`` take it."""
RoundsOption = Annotated[int | None, typer.Option(help="Override federation.rounds.")]
"""``--rounds``, as ``redfl run`` and ``redfl tune`` take it."""


def fail(code: int, message: str) -> typer.Exit:
    """Print ``redfl: error: <one line>`` on stderr; the exit to raise."""
    typer.echo(f"redfl: error: {' '.join(message.split())}", err=True)
    return typer.Exit(code)


class _Interrupts:
    """First SIGINT: set ``cancel``; second: the default (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt
        self.cancel.set()
        console.print("redfl: cancelling at the end of this round (Ctrl-C again to abort)")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def ray_connected() -> bool:
    """Whether this process is connected to Ray already (without importing Ray)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def leave_ray(connected_before: bool) -> None:
    """Stop the embedded Ray instance the run started fast, or leave the cluster it joined
    (nothing to do when the run did not load Ray, or when this process was connected to Ray
    before the command: a caller's instance is the caller's to stop)."""
    if "ray" in sys.modules and not connected_before:
        from redfl.runtime.embedded import leave_ray as leave

        leave()


def run(
    config: Annotated[
        str | None, typer.Argument(help="Federation config (TOML); optional with --resume.")
    ] = None,
    address: AddressOption = None,
    rounds: RoundsOption = None,
    seed: Annotated[int | None, typer.Option(help="Override federation.seed.")] = None,
    out: Annotated[str | None, typer.Option(help="Run folder (default runs/<run-id>).")] = None,
    connect_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to join the Ray cluster (federation.connect_timeout)."),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="Continue the run in this folder from its newest checkpoint."),
    ] = None,
) -> None:
    """Run the federation CONFIG describes; write metrics, events, summary and model."""
    overrides: dict[str, Any] = {
        k: v
        for k, v in (
            ("rounds", rounds),
            ("seed", seed),
            ("address", address),
            ("connect_timeout", connect_timeout),
        )
        if v is not None
    }
    reporter = ConsoleReporter(console)
    connected_before = ray_connected()
    with _Interrupts() as interrupts:
        try:
            outcome = run_federation(
                config,
                out=out,
                callbacks=[reporter],
                cancel=interrupts.cancel,
                overrides=overrides,
                resume=resume,
            )
        except ConfigError as error:
            raise fail(EXIT_BAD_INPUT, str(error)) from None
        except ConnectionError as error:
            raise fail(EXIT_FAILED, str(error)) from None
        except KeyboardInterrupt:
            raise fail(EXIT_CANCELLED, "aborted") from None
        finally:
            reporter.close()
            leave_ray(connected_before)
    summary, folder = outcome.summary, outcome.folder
    if outcome.status == "failed":
        raise fail(EXIT_FAILED, f"{outcome.error} (run folder {folder})")
    accuracy = "n/a" if summary["accuracy"] is None else f"{summary['accuracy']:.4f}"
    if outcome.status == "cancelled":
        rounds_done = summary["rounds"]
        typer.echo(f"cancelled after {rounds_done} rounds, accuracy {accuracy}; wrote {folder}")
        raise typer.Exit(EXIT_CANCELLED)
    typer.echo(
        f"final accuracy {accuracy} after {summary['rounds']} rounds, "
        f"{summary['clients']} clients, {summary['wall_seconds']:.1f} s; wrote {folder}"
    )
