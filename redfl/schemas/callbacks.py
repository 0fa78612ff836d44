"""Hooks into the round loop: progress, logging, checkpoints, early stopping.

Nobody overrides the loop to add these; they subclass :class:`Callback`. Every schema
emits the same typed events (:mod:`redfl.core.events`) through :func:`emit`; a callback
receives each one in :meth:`Callback.on_event`, which by default calls the matching
``on_*`` method below, so a callback overrides either ``on_event`` or the methods it needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redfl.core.arrays import Parameters
from redfl.core.events import ClientsProgress, Event, RoundFinished, RoundStarted
from redfl.core.result import FederationResult, RoundRecord


class Callback:
    """Base class: override the events you need (all are no-ops here)."""

    def on_event(self, event: Event) -> bool | None:
        """Any event; return ``True`` on a :class:`RoundFinished` to stop after that round.

        The default passes round events to :meth:`on_round_begin`,
        :meth:`on_clients_done` and :meth:`on_round_end`.
        """
        if isinstance(event, RoundStarted):
            self.on_round_begin(event.round, event.sampled)
        elif isinstance(event, ClientsProgress):
            self.on_clients_done(event.round, event.done, event.sampled)
        elif isinstance(event, RoundFinished):
            return self.on_round_end(event.record)
        return None

    def on_train_begin(self, rounds: int) -> None:
        """Before the first round of a ``train`` call."""

    def on_round_begin(self, rnd: int, sampled: int) -> None:
        """A round sampled ``sampled`` clients and is about to dispatch them."""

    def on_clients_done(self, rnd: int, done: int, sampled: int) -> None:
        """``done`` of the round's ``sampled`` clients have finished fitting."""

    def on_aggregate(self, rnd: int, parameters: Parameters) -> None:
        """Round ``rnd`` produced new global ``parameters`` (read them, do not modify)."""

    def on_metrics(self, rnd: int, metrics: Mapping[str, float]) -> None:
        """Round ``rnd``'s metrics (evaluation, client means, strategy's such as epsilon)."""

    def on_round_end(self, record: RoundRecord) -> bool | None:
        """A round ended; return ``True`` to stop training after it."""
        return None

    def on_train_end(self, result: FederationResult) -> None:
        """After the last round of a ``train`` call."""


def emit(callbacks: Sequence[Callback], event: Event) -> bool:
    """Give ``event`` to every callback (all of them, in order); ``True`` if one asked to
    stop."""
    stops = [callback.on_event(event) for callback in callbacks]
    return any(stops)
