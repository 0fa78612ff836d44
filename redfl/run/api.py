"""``redfl.run``: the one path from a config to a finished run folder.

The CLI (``redfl run``) and the platform are thin shells over :func:`run`. Everything that
can be checked is checked before the run folder is created (config values, import
targets, strategy parameters, topology files, node options), so a bad config leaves no
folder behind. A run that fails later leaves its reason in ``summary.json``
(``status``, ``error``) and, for an unexpected error, its traceback in ``redfl.log``.

A run folder holds ``config.json``, ``events.jsonl``, ``metrics.jsonl``,
``failures.jsonl``, ``summary.json`` and, unless the run failed before its first round,
``model.safetensors``.
"""

from __future__ import annotations

import _thread
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from redfl.core.arrays import Parameters
from redfl.core.config import ConfigError
from redfl.core.events import (
    Event,
    FailureRecorded,
    RoundFinished,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
    RunStatus,
    RunStopped,
)
from redfl.core.result import FederationError, FederationResult
from redfl.core.server_state import CheckpointError, ServerState, save_state
from redfl.run.checkpoints import Checkpointer, checkpoint_path, load_latest
from redfl.run.config import FederationConfig
from redfl.run.digest import config_diff, config_fields
from redfl.run.folder import new_run_dir, save_parameters, write_summary
from redfl.run.prepare import Prepared, prepare, saved_config
from redfl.run.recorder import RunRecorder
from redfl.run.tracking import tracking_callbacks
from redfl.runtime.resources import ResourceError
from redfl.schemas.callbacks import Callback, emit

RUN_ERRORS = (FederationError, ResourceError, ConnectionError)
"""Errors that end a run with a one-line reason (anything else also logs a traceback)."""


class StopRequest:
    """Ends a :func:`run` at once, mid-round, from another thread (a force-stop, a time
    limit): :meth:`stop` records the reason and interrupts the main thread, where the run
    must be running, as a Ctrl-C would (Ray's waits give way to it too).

    The round in progress is dropped; the model and records of the last completed round
    are written, with status ``"stopped"`` and the reason. The server state is not saved
    then (it may hold half a round): the run's checkpoints so far stay.

    A stop never lands while an event is being handed to the run's callbacks: every
    callback sees an event, or none does. Asked from another thread meanwhile, it waits for
    the event to be handed on; asked by a callback, it takes effect once every callback has
    the event. Once the run has ended, a stop does nothing.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self._lock = threading.RLock()
        self._guarded = 0
        self._deferred = False
        self._closed = False

    def stop(self, reason: str) -> None:
        """Stop the run now for ``reason`` (the first reason given is kept)."""
        with self._lock:
            if self.reason is not None or self._closed:
                return
            self.reason = " ".join(reason.split()) or "stopped"
            if self._guarded:  # asked by a callback, in the run's own thread
                self._deferred = True
            else:
                _thread.interrupt_main()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Hold stops while the run's thread hands an event to its callbacks."""
        with self._lock:
            self._guarded += 1
            try:
                yield
            finally:
                self._guarded -= 1
        if self._deferred and not self._guarded:
            self._deferred = False
            raise KeyboardInterrupt

    def close(self) -> None:
        """The run has ended: later stops do nothing."""
        with self._lock:
            self._closed = True


class _Sinks(Callback):
    """The run's callbacks as one: each event goes to all of them in order, guarded from
    stops (:meth:`StopRequest.guard`); the direct calls of schemas go to each."""

    def __init__(self, sinks: list[Callback], stop: StopRequest | None) -> None:
        self.sinks = sinks
        self.stop = stop

    def on_event(self, event: Event) -> bool | None:
        with self.stop.guard() if self.stop is not None else nullcontext():
            return True if emit(self.sinks, event) else None

    def on_train_begin(self, rounds: int) -> None:
        for sink in self.sinks:
            sink.on_train_begin(rounds)

    def on_aggregate(self, rnd: int, parameters: Parameters) -> None:
        for sink in self.sinks:
            sink.on_aggregate(rnd, parameters)

    def on_metrics(self, rnd: int, metrics: Mapping[str, float]) -> None:
        for sink in self.sinks:
            sink.on_metrics(rnd, metrics)

    def on_train_end(self, result: FederationResult) -> None:
        for sink in self.sinks:
            sink.on_train_end(result)


@dataclass
class RunOutcome:
    """What :func:`run` produced.

    Attributes
    ----------
    folder:
        The run folder.
    status:
        ``"succeeded"``, ``"failed"``, ``"cancelled"`` or ``"stopped"``.
    summary:
        What ``summary.json`` holds.
    result:
        The federation's result (``None`` if it failed or was stopped).
    error:
        The one-line reason of a failed (or stopped) run.
    """

    folder: Path
    status: RunStatus
    summary: dict[str, Any]
    result: FederationResult | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


class _LastRound(Callback):
    """Keeps the global model of the last completed round (the parameters a schema hands
    to ``on_aggregate``, taken when its round finishes; no copy: a new round makes a new
    model)."""

    def __init__(self) -> None:
        self.pending: Parameters | None = None
        self.parameters: Parameters | None = None

    def on_aggregate(self, rnd: int, parameters: Parameters) -> None:
        self.pending = parameters

    def on_event(self, event: Event) -> bool | None:
        if isinstance(event, RoundFinished) and self.pending is not None:
            self.parameters = self.pending
        return None


class _Stopper(Callback):
    """Stops the federation at the next round boundary once ``cancel`` is set."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.cancel = cancel
        self.fired = False

    def on_event(self, event: Event) -> bool | None:
        if self.cancel is not None and self.cancel.is_set() and event.type == "round_finished":
            self.fired = True
            return True
        return None


def run(
    config: str | Path | Mapping[str, Any] | FederationConfig | None = None,
    *,
    out: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    cancel: threading.Event | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: str | Path | None = None,
    runs_root: str | Path = "runs",
    start: ServerState | None = None,
    stop: StopRequest | None = None,
) -> RunOutcome:
    """Run the federation ``config`` describes and write its run folder.

    Parameters
    ----------
    config:
        A TOML path, a dict of the same tables, or a validated :class:`FederationConfig`
        (optional with ``resume``: the run folder's own config is used).
    out:
        The run folder (default ``runs_root/<name>-<time>-<id>``); created if missing.
    callbacks:
        Receive every event of the run (:meth:`Callback.on_event`).
    cancel:
        Set it (from any thread) to stop the run at the next round boundary: the model,
        the server state and ``summary.json`` are written with status ``"cancelled"``.
    stop:
        Call its :meth:`~StopRequest.stop` (from another thread) to end the run at once,
        mid-round, with status ``"stopped"``.
    overrides:
        ``federation`` values to override (``rounds``, ``seed``, ``address``, ...).
    resume:
        A run folder to continue from its newest checkpoint; the result is bit-identical
        to a run that was never interrupted. A ``config`` that differs from the folder's
        in a field that changes results is refused, naming the fields.
    start:
        A server state to continue from in a new run folder (a Tune trial started from
        another trial's checkpoint): its rounds, parameters, strategy state, history and
        failures are loaded, and the folder gets it as its first checkpoint (made with
        this config), so that ``resume`` works there too. The caller checks that the
        state fits the config (:func:`redfl.run.tune_report.load_checkpoint`).

    Raises
    ------
    ConfigError
        A bad config (one line naming the field); nothing was created.
    ConnectionError
        The Ray cluster at ``federation.address`` cannot be joined within
        ``federation.connect_timeout``; nothing was created.

    Examples
    --------
    >>> import tempfile
    >>> config = {"federation": {"rounds": 2, "runtime": "local"},
    ...           "client": {"target": "redfl.examples.echo:EchoClient", "num_clients": 3,
    ...                      "options": {"size": 4}}}
    >>> outcome = run(config, out=tempfile.mkdtemp())
    >>> outcome.status, outcome.summary["rounds"], sorted(outcome.result.parameters)
    ('succeeded', 2, ['w'])
    """
    if resume is not None:
        if start is not None:
            raise ConfigError("start: a resumed run continues from its own checkpoint; give one")
        return _resume(Path(resume), config, callbacks, cancel, overrides, stop)
    if config is None:
        raise ConfigError("config: a config is needed (or resume= a run folder)")
    prepared = prepare(config, overrides)
    prepared.connect()  # an unreachable cluster fails here, within connect_timeout
    folder = (
        Path(out) if out is not None else new_run_dir(runs_root, prepared.config.federation.name)
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"out: cannot create the run folder {folder}: {error}") from None
    (folder / "config.json").write_text(
        prepared.config.model_dump_json(indent=2, by_alias=True) + "\n", encoding="utf-8"
    )
    if start is not None:  # the folder's own first checkpoint, as if this run had made it
        start = replace(start, config_digest=prepared.digest())
        save_state(start, checkpoint_path(folder, start.round))
    return _execute(prepared, folder, callbacks, cancel, start, stop)


def _resume(
    folder: Path,
    config: str | Path | Mapping[str, Any] | FederationConfig | None,
    callbacks: Sequence[Callback],
    cancel: threading.Event | None,
    overrides: Mapping[str, Any] | None,
    stop: StopRequest | None,
) -> RunOutcome:
    """Continue the run of ``folder`` from its newest checkpoint."""
    saved = saved_config(folder)
    prepared = prepare(saved if config is None else config, overrides)
    differing = config_diff(saved, prepared.config)
    if differing:
        raise ConfigError(
            f"resume: the config differs from the one {folder} ran with in "
            f"{', '.join(differing)}; resume with that config (or none)"
        )
    try:
        state = load_latest(folder)
    except CheckpointError as error:
        raise ConfigError(f"resume: {error}") from None
    if state.config_digest != prepared.digest():
        raise ConfigError(f"resume: the checkpoint of {folder} was made with another config")
    prepared.connect()
    return _execute(prepared, folder, callbacks, cancel, state, stop)


def _execute(
    prepared: Prepared,
    folder: Path,
    callbacks: Sequence[Callback],
    cancel: threading.Event | None,
    state: ServerState | None,
    stop: StopRequest | None,
) -> RunOutcome:
    cfg, federation = prepared.config, prepared.federation
    first = 1 if state is None else state.round + 1
    recorder = RunRecorder(folder, append=state is not None)
    if state is not None:
        recorder.rewrite(state.history, state.failures)  # drop rounds after the checkpoint
    stopper = _Stopper(cancel)
    last_round = _LastRound()
    trackers = tracking_callbacks(cfg.tracking, config_fields(cfg), folder, cfg.federation.name)
    sinks: list[Callback] = [last_round, recorder, *callbacks, *trackers]
    every = cfg.federation.checkpoint_every
    checkpointer = Checkpointer(federation, folder, every, prepared.digest(), sinks)
    checkpointer.saved_round = -1 if state is None else state.round  # on disk already
    sinks.append(checkpointer)
    sinks.append(stopper)
    every_sink = _Sinks(sinks, stop)
    federation.callbacks = [every_sink]
    rounds = cfg.federation.rounds
    started = time.perf_counter()
    result: FederationResult | None = None
    error: str | None = None
    try:
        every_sink.on_event(
            RunStarted(folder.name, cfg.topology.schema_, rounds, first, tuple(prepared.notes))
        )
        if state is not None:
            federation.load_server_state(state)
        if first <= rounds:
            result = federation.train(rounds - first + 1)
        elif state is not None:  # resumed with no round left: the checkpoint is the result
            result = FederationResult(state.history, state.parameters, state.failures)
    except RUN_ERRORS as failure:
        error = " ".join(str(failure).split())
        for item in getattr(failure, "failures", []):
            every_sink.on_event(FailureRecorded(item))
    except KeyboardInterrupt:
        if stop is not None and stop.reason is not None:
            with _closing(stop):
                return _stopped(prepared, folder, sinks, recorder, stop.reason, started, last_round)
        error = "aborted (interrupted twice)"
        _finish(prepared, folder, sinks, recorder, None, error, started, False, checkpointer)
        raise
    except Exception as failure:  # an unexpected error: one line here, traceback in the log
        error = f"{type(failure).__name__}: {' '.join(str(failure).split())}"
        (folder / "redfl.log").write_text(traceback.format_exc(), encoding="utf-8")
    with _closing(stop):
        return _finish(
            prepared, folder, sinks, recorder, result, error, started, stopper.fired, checkpointer
        )


@contextmanager
def _closing(stop: StopRequest | None) -> Iterator[None]:
    """The run's end: no stop lands in it, and none is taken after it."""
    if stop is None:
        yield
        return
    with stop.guard():
        stop.close()
        yield


def _stopped(
    prepared: Prepared,
    folder: Path,
    sinks: list[Callback],
    recorder: RunRecorder,
    reason: str,
    started: float,
    last_round: _LastRound,
) -> RunOutcome:
    """End a run stopped mid-round: stop the federation, write the last completed round's
    model and the summary, emit :class:`RunStopped`."""
    history = prepared.history()
    parameters = last_round.parameters
    if parameters is None and history:  # a schema that hands no model to on_aggregate
        parameters = prepared.last_parameters()
    prepared.federation.stop()
    summary = prepared.summary(history, time.perf_counter() - started, "stopped", reason)
    write_summary(folder / "summary.json", summary)
    if parameters is not None:
        save_parameters(folder / "model.safetensors", parameters, prepared.model_metadata(history))
    emit(sinks, RunStopped(len(history), reason))
    recorder.close()
    return RunOutcome(folder, "stopped", summary, None, reason, list(prepared.notes))


def _finish(
    prepared: Prepared,
    folder: Path,
    sinks: list[Callback],
    recorder: RunRecorder,
    result: FederationResult | None,
    error: str | None,
    started: float,
    cancelled: bool,
    checkpointer: Checkpointer,
) -> RunOutcome:
    """Save the state, stop the federation, write model and summary, emit the closing
    event."""
    federation = prepared.federation
    history = prepared.history() if result is None else result.history
    parameters = result.parameters if result is not None else prepared.last_parameters()
    if history:
        try:
            checkpointer.save()
        except Exception as failure:  # the run's own outcome matters more; say it
            error = error or f"saving the final state failed: {failure}"
    federation.stop()
    status: RunStatus = "failed" if error is not None else "cancelled" if cancelled else "succeeded"
    summary = prepared.summary(history, time.perf_counter() - started, status, error)
    if result is not None:
        summary["failures"] = len(result.failures)
    write_summary(folder / "summary.json", summary)
    if parameters is not None:
        save_parameters(folder / "model.safetensors", parameters, prepared.model_metadata(history))
    done = len(history)
    closing: Event = (
        RunFailed(done, error)
        if error is not None
        else RunCancelled(done)
        if cancelled
        else RunFinished(done, summary)
    )
    emit(sinks, closing)
    recorder.close()
    return RunOutcome(folder, status, summary, result, error, list(prepared.notes))
