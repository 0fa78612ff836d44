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

import threading
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redfl.core.arrays import Parameters, copy_parameters
from redfl.core.config import ConfigError, FederationConfig
from redfl.core.events import (
    Event,
    FailureRecorded,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
)
from redfl.core.result import FederationError, FederationResult
from redfl.run.prepare import Prepared, prepare
from redfl.run.recorder import RunRecorder
from redfl.rundir import new_run_dir, save_parameters, write_summary
from redfl.runtime.resources import ResourceError
from redfl.schemas.callbacks import Callback, emit
from redfl.schemas.star import StarFederation

RUN_ERRORS = (FederationError, ResourceError, ConnectionError)
"""Errors that end a run with a one-line reason (anything else also logs a traceback)."""


@dataclass
class RunOutcome:
    """What :func:`run` produced.

    Attributes
    ----------
    folder:
        The run folder.
    status:
        ``"succeeded"``, ``"failed"`` or ``"cancelled"``.
    summary:
        What ``summary.json`` holds.
    result:
        The federation's result (``None`` if it failed).
    error:
        The one-line reason of a failed run.
    """

    folder: Path
    status: str
    summary: dict[str, Any]
    result: FederationResult | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


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
    config: str | Path | Mapping[str, Any] | FederationConfig,
    *,
    out: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    cancel: threading.Event | None = None,
    overrides: Mapping[str, Any] | None = None,
    runs_root: str | Path = "runs",
    initial_parameters: Parameters | None = None,
) -> RunOutcome:
    """Run the federation ``config`` describes and write its run folder.

    Parameters
    ----------
    config:
        A TOML path, a dict of the same tables, or a validated :class:`FederationConfig`.
    out:
        The run folder (default ``runs_root/<name>-<time>-<id>``); created if missing.
    callbacks:
        Receive every event of the run (:meth:`Callback.on_event`).
    cancel:
        Set it (from any thread) to stop the run at the next round boundary: the model and
        ``summary.json`` are written with status ``"cancelled"``.
    overrides:
        ``federation`` values to override (``rounds``, ``seed``, ``address``, ...).
    initial_parameters:
        A star federation's starting global model instead of the client's
        ``initial_parameters`` (a Tune trial restored from a checkpoint).

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
    prepared = prepare(config, overrides)
    if initial_parameters is not None:
        if not isinstance(prepared.federation, StarFederation):
            raise ConfigError("initial_parameters: only a star federation has a global model")
        prepared.federation.parameters = copy_parameters(initial_parameters)
    prepared.connect()  # an unreachable cluster fails here, within connect_timeout
    folder = (
        Path(out) if out is not None else new_run_dir(runs_root, prepared.config.federation.name)
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"out: cannot create the run folder {folder}: {error}") from None
    return _execute(prepared, folder, callbacks, cancel)


def _execute(
    prepared: Prepared,
    folder: Path,
    callbacks: Sequence[Callback],
    cancel: threading.Event | None,
) -> RunOutcome:
    cfg, federation = prepared.config, prepared.federation
    (folder / "config.json").write_text(
        cfg.model_dump_json(indent=2, by_alias=True) + "\n", encoding="utf-8"
    )
    recorder = RunRecorder(folder)
    stopper = _Stopper(cancel)
    sinks: list[Callback] = [recorder, *callbacks, stopper]
    federation.callbacks = sinks
    rounds = cfg.federation.rounds
    run_id = folder.name or uuid.uuid4().hex
    emit(sinks, RunStarted(run_id, cfg.topology.schema_, rounds, 1, tuple(prepared.notes)))
    started = time.perf_counter()
    result: FederationResult | None = None
    error: str | None = None
    try:
        result = federation.train(rounds)
    except RUN_ERRORS as failure:
        error = " ".join(str(failure).split())
        for item in getattr(failure, "failures", []):
            emit(sinks, FailureRecorded(item))
    except KeyboardInterrupt:
        error = "aborted (interrupted twice)"
        _finish(prepared, folder, sinks, recorder, None, error, started, False)
        raise
    except Exception as failure:  # an unexpected error: one line here, traceback in the log
        error = f"{type(failure).__name__}: {' '.join(str(failure).split())}"
        (folder / "redfl.log").write_text(traceback.format_exc(), encoding="utf-8")
    return _finish(prepared, folder, sinks, recorder, result, error, started, stopper.fired)


def _finish(
    prepared: Prepared,
    folder: Path,
    sinks: list[Callback],
    recorder: RunRecorder,
    result: FederationResult | None,
    error: str | None,
    started: float,
    cancelled: bool,
) -> RunOutcome:
    """Stop the federation, write model and summary, emit the closing event."""
    federation = prepared.federation
    history = prepared.history() if result is None else result.history
    parameters = result.parameters if result is not None else prepared.last_parameters()
    federation.stop()
    status = "failed" if error is not None else "cancelled" if cancelled else "succeeded"
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
