"""Events: typed records of what a run did, for every schema.

Schemas emit the round-level events (:class:`RoundStarted`, :class:`ClientsProgress`,
:class:`RoundFinished`, :class:`FailureRecorded`); the run API (:func:`redfl.run`) adds the
run-level ones (:class:`RunStarted`, :class:`CheckpointSaved`, :class:`RunFinished`,
:class:`RunFailed`, :class:`RunCancelled`, :class:`RunStopped`); the runtime reports
:class:`WorkerRestarted` and, when clients run at sites, :class:`SiteJoined`,
:class:`SiteRound` and :class:`SiteLeft`; a round with secure aggregation reports each of its
stages (:class:`SecureAggregationStage`).
Each event serialises to one JSON object whose ``type`` names it, and back
(:func:`event_from_json`): ``events.jsonl`` in the run folder, the CLI's console, the
platform's WebSocket and Tune's reports all read this one stream.

Examples
--------
>>> event = RoundStarted(round=3, sampled=10)
>>> event.to_json()
{'type': 'round_started', 'round': 3, 'sampled': 10}
>>> event_from_json(event.to_json()) == event
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal, get_args

from redfl.core.result import Failure, RoundRecord

RunStatus = Literal["succeeded", "failed", "cancelled", "stopped"]
"""A finished run's status."""

EventType = Literal[
    "event",
    "run_started",
    "round_started",
    "clients_progress",
    "round_finished",
    "failure",
    "checkpoint_saved",
    "worker_restarted",
    "site_joined",
    "site_round",
    "site_left",
    "secagg_stage",
    "run_finished",
    "run_failed",
    "run_cancelled",
    "run_stopped",
]
"""The ``type`` of every event in JSON (``"event"``: the base class)."""


@dataclass(frozen=True)
class Event:
    """Base of every event; ``type`` is the event's name in JSON."""

    type: ClassVar[EventType] = "event"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``type`` first, then the fields."""
        body: dict[str, Any] = {"type": self.type}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, RoundRecord | Failure):
                value = asdict(value)
            body[item.name] = value
        return body


@dataclass(frozen=True)
class RunStarted(Event):
    """A run began (or resumed at ``first_round``) and will run up to ``rounds`` rounds."""

    type: ClassVar[EventType] = "run_started"
    run_id: str
    schema: str
    rounds: int
    first_round: int = 1
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoundStarted(Event):
    """Round ``round`` sampled ``sampled`` clients (or nodes)."""

    type: ClassVar[EventType] = "round_started"
    round: int
    sampled: int


@dataclass(frozen=True)
class ClientsProgress(Event):
    """``done`` of round ``round``'s ``sampled`` clients have finished."""

    type: ClassVar[EventType] = "clients_progress"
    round: int
    done: int
    sampled: int


@dataclass(frozen=True)
class RoundFinished(Event):
    """A round ended; ``record`` is its :class:`~redfl.core.result.RoundRecord`."""

    type: ClassVar[EventType] = "round_finished"
    record: RoundRecord


@dataclass(frozen=True)
class FailureRecorded(Event):
    """A client or node failed (the run may go on)."""

    type: ClassVar[EventType] = "failure"
    failure: Failure


@dataclass(frozen=True)
class CheckpointSaved(Event):
    """The server state after round ``round`` was saved in ``path``."""

    type: ClassVar[EventType] = "checkpoint_saved"
    round: int
    path: str


@dataclass(frozen=True)
class WorkerRestarted(Event):
    """Worker ``worker`` was replaced (``reason``), taking ``seconds``."""

    type: ClassVar[EventType] = "worker_restarted"
    worker: int
    reason: str
    seconds: float


@dataclass(frozen=True)
class SiteJoined(Event):
    """Site ``site`` connected from ``address`` and serves its client."""

    type: ClassVar[EventType] = "site_joined"
    site: str
    address: str


@dataclass(frozen=True)
class SiteRound(Event):
    """Site ``site`` took part in round ``round``: its fit result was accepted."""

    type: ClassVar[EventType] = "site_round"
    site: str
    round: int


@dataclass(frozen=True)
class SiteLeft(Event):
    """Site ``site`` is gone (``reason``: its connection closed, it stopped polling, the
    run ended); it may join again."""

    type: ClassVar[EventType] = "site_left"
    site: str
    reason: str


@dataclass(frozen=True)
class SecureAggregationStage(Event):
    """A stage of round ``round``'s secure aggregation ended.

    ``stage`` is ``"advertise_keys"`` (keys advertised), ``"share_keys"`` (encrypted
    shares sent), ``"masked_input"`` (masked inputs collected) or ``"unmasking"`` (the sum
    unmasked); ``clients`` sent their message in it, ``dropped`` (node ids) had sent in
    the stage before but not in this one (for the first stage: their fit failed).
    """

    type: ClassVar[EventType] = "secagg_stage"
    round: int
    stage: str
    clients: int
    dropped: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class RunFinished(Event):
    """The run completed ``rounds`` rounds."""

    type: ClassVar[EventType] = "run_finished"
    rounds: int
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFailed(Event):
    """The run stopped on an error after ``rounds`` completed rounds."""

    type: ClassVar[EventType] = "run_failed"
    rounds: int
    error: str


@dataclass(frozen=True)
class RunCancelled(Event):
    """The run was cancelled; it stopped after ``rounds`` completed rounds."""

    type: ClassVar[EventType] = "run_cancelled"
    rounds: int


@dataclass(frozen=True)
class RunStopped(Event):
    """The run was stopped at once, mid-round, for ``reason`` (a force-stop, a time
    limit); ``rounds`` rounds had completed, the one in progress was dropped."""

    type: ClassVar[EventType] = "run_stopped"
    rounds: int
    reason: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RunStarted,
        RoundStarted,
        ClientsProgress,
        RoundFinished,
        FailureRecorded,
        CheckpointSaved,
        WorkerRestarted,
        SiteJoined,
        SiteRound,
        SiteLeft,
        SecureAggregationStage,
        RunFinished,
        RunFailed,
        RunCancelled,
        RunStopped,
    )
}
"""Every event class by its JSON ``type``."""

assert set(EVENT_TYPES) == set(get_args(EventType)) - {"event"}, "EventType lists every event"


def event_from_json(body: dict[str, Any]) -> Event:
    """The event a :meth:`Event.to_json` dict describes (unknown keys such as ``seq`` and
    ``time`` are ignored).

    Raises
    ------
    ValueError
        If ``type`` is missing or unknown.
    """
    cls = EVENT_TYPES.get(str(body.get("type")))
    if cls is None:
        raise ValueError(f"unknown event type {body.get('type')!r}; known: {sorted(EVENT_TYPES)}")
    values = {f.name: body[f.name] for f in fields(cls) if f.name in body}
    if cls is RoundFinished:
        values["record"] = RoundRecord(**values["record"])
    elif cls is FailureRecorded:
        values["failure"] = Failure(**values["failure"])
    elif cls is RunStarted:
        values["notes"] = tuple(values.get("notes", ()))
    elif cls is SecureAggregationStage:
        values["dropped"] = tuple(values.get("dropped", ()))
    return cls(**values)
