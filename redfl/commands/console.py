"""What ``redfl run`` shows on the terminal: a progress bar, a line per round, failures,
restarts, sites joining and leaving."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from redfl.core.events import (
    ClientsProgress,
    Event,
    FailureRecorded,
    RoundFinished,
    RunStarted,
    SiteJoined,
    SiteLeft,
    WorkerRestarted,
)
from redfl.core.result import RoundRecord
from redfl.schemas.callbacks import Callback

FAILURES_SHOWN = 3
"""Failure reasons printed per round (all of them are in ``failures.jsonl``)."""


class ConsoleReporter(Callback):
    """A rich progress bar over rounds; one line per round with the first failure reasons."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("rounds", total=None, detail="starting workers")
        self.rounds = 0
        self._reasons: list[str] = []

    def on_event(self, event: Event) -> bool | None:
        """Update the bar; print round lines, failure reasons, restarts and notes."""
        if isinstance(event, RunStarted):
            self.rounds = event.rounds
            for note in event.notes:
                self.console.print(f"redfl: note: {note}")
            self.progress.update(self.task, total=event.rounds, completed=event.first_round - 1)
            self.progress.start()
        elif isinstance(event, ClientsProgress):
            self.progress.update(self.task, detail=f"clients {event.done}/{event.sampled}")
        elif isinstance(event, FailureRecorded):
            failure = event.failure
            self._reasons.append(f"{failure.node_id} ({failure.phase}): {failure.reason}")
        elif isinstance(event, SiteJoined):
            self.console.print(f"redfl: site {event.site} joined from {event.address}")
        elif isinstance(event, SiteLeft):
            self.console.print(f"redfl: site {event.site} left: {event.reason}")
        elif isinstance(event, WorkerRestarted):
            self.console.print(
                f"redfl: worker {event.worker} restarted in {event.seconds:.1f} s: {event.reason}"
            )
        elif isinstance(event, RoundFinished):
            detail = describe(event.record)
            self.progress.update(self.task, advance=1, detail=detail)
            self.console.print(f"round {event.record.round}/{self.rounds}  {detail}")
            for reason in self._reasons[:FAILURES_SHOWN]:
                self.console.print(f"  failed: {reason}")
            if len(self._reasons) > FAILURES_SHOWN:
                more = len(self._reasons) - FAILURES_SHOWN
                self.console.print(f"  ... and {more} more (failures.jsonl)")
            self._reasons = []
        return None

    def close(self) -> None:
        """Hide the bar."""
        self.progress.stop()


def describe(record: RoundRecord) -> str:
    """A round's one-line summary: clients, failures, losses, accuracy, seconds."""
    parts = [f"clients {record.succeeded}/{record.sampled}"]
    if record.failed:
        parts.append(f"failed {record.failed}")
    if record.train_loss is not None:
        parts.append(f"train loss {record.train_loss:.4f}")
    if record.loss is not None:
        parts.append(f"loss {record.loss:.4f}")
    if record.accuracy is not None:
        parts.append(f"accuracy {record.accuracy:.4f}")
    parts.append(f"{record.seconds:.2f} s")
    return "  ".join(parts)
