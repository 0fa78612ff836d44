"""The job that executes one stored run: ``python -m redfl.platform.job RUN_ID --data DIR``.

The platform submits it as a Ray job, so it lives on when the web server stops. It reads the
run's config from the store (checked again by the web rules), calls :func:`redfl.run` on the
run folder and writes every event into the store as it happens: the event stream (what the
WebSocket replays), the round records, the failures and the status changes.

Ending a run early, two ways:

- cancel: at each round's end the job reads the run's ``cancel_requested`` flag; once set,
  the run stops at that boundary (model, state and summary saved, status ``cancelled``);
- stop: a watcher thread reads the run's ``stop_requested`` flag every ``WATCH_SECONDS``
  and ends the run at once, mid-round (:class:`redfl.run.api.StopRequest`: the round in
  progress is dropped, the model and records of the last completed round are kept, status
  ``stopped``); so does the operator's wall-clock limit (``max_run_seconds``).

What the job prints (and Ray's workers print through it) also goes to ``run.log`` in the run
folder, which the API serves as the run's log.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.orm import Session, sessionmaker

from redfl.core.config import ConfigError
from redfl.core.events import Event, FailureRecorded, RoundFinished
from redfl.platform.db import make_engine, session_factory
from redfl.platform.settings import Settings
from redfl.platform.store import Store
from redfl.platform.tracing import RoundSpans, make_tracer
from redfl.platform.untrusted import parse_web_config
from redfl.run.api import StopRequest
from redfl.run.api import run as run_federation
from redfl.runtime.jobs import lower_priority
from redfl.schemas.callbacks import Callback

WATCH_SECONDS = 0.5
LOG_FILE = "run.log"


class StoreSink(Callback):
    """Writes each event of a run into the store; sets ``cancel`` when the run's cancel flag
    is set (read at each round's end). (A stop never lands inside a write: the run holds
    stops while its callbacks take an event.)"""

    def __init__(self, sessions: sessionmaker[Session], run_id: str, cancel: threading.Event):
        self.sessions = sessions
        self.run_id = run_id
        self.cancel = cancel
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> bool | None:
        """Store ``event`` (and its round record or failure) in one go."""
        body = event.to_json()
        kind = body.pop("type")
        body["time"] = round(time.time(), 6)
        with self._lock, self.sessions() as session:
            store = Store(session)
            if isinstance(event, RoundFinished):
                store.add_round_metric(self.run_id, event.record.round, event.record.to_json())
            elif isinstance(event, FailureRecorded):
                f = event.failure
                store.add_failure(self.run_id, f.round, f.node_id, f.phase, f.reason)
            store.append_event(self.run_id, kind, body)
            if isinstance(event, RoundFinished) and store.cancel_requested(self.run_id):
                self.cancel.set()
        return None


class StopWatcher(threading.Thread):
    """Stops the run when someone asks (the run's ``stop_requested``) or when its
    wall-clock limit passes."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        run_id: str,
        stop: StopRequest,
        limit_seconds: int | None,
    ) -> None:
        super().__init__(name="redfl-stop-watcher", daemon=True)
        self.sessions = sessions
        self.run_id = run_id
        self.stop = stop
        self.deadline = None if limit_seconds is None else time.monotonic() + limit_seconds
        self.limit_seconds = limit_seconds
        self.done = threading.Event()

    def reason(self) -> str | None:
        """Why the run must stop now, or ``None``."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return f"stopped: the wall-clock limit of {self.limit_seconds} s was reached"
        with self.sessions() as session:
            return Store(session).stop_request(self.run_id)

    def run(self) -> None:
        """Check every ``WATCH_SECONDS`` until the run ends or is stopped."""
        while not self.done.wait(WATCH_SECONDS):
            try:
                reason = self.reason()
            except Exception:  # a database hiccup: ask again
                continue
            if reason is not None:
                self.stop.stop(reason)  # a no-op once the run has ended
                return


class Tee:
    """A text stream that writes to another stream and to a log file."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self.stream = stream
        self.log = log

    def write(self, text: str) -> int:
        """Write ``text`` to both."""
        self.log.write(text)
        self.log.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        """Flush both."""
        self.stream.flush()
        self.log.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def execute(run_id: str, settings: Settings) -> str:
    """Execute the stored run ``run_id``; its final status.

    A run that is no longer queued (cancelled before its job started) is left alone.
    """
    sessions = session_factory(make_engine(settings.url))
    with sessions() as session:
        store = Store(session)
        run = store.require_run(run_id)
        if run.status != "queued":
            return run.status
        text, fmt, folder = run.config_text, run.config_format, run.run_dir
        store.record_status(run_id, "running")
    cancel, stop = threading.Event(), StopRequest()
    sink = StoreSink(sessions, run_id, cancel)
    callbacks: list[Callback] = [sink]
    tracer = make_tracer(settings.otlp_endpoint, "redfl-job")
    if tracer is not None:
        callbacks.append(RoundSpans(tracer, run_id))
    watcher = StopWatcher(sessions, run_id, stop, settings.max_run_seconds)
    try:
        config = parse_web_config(text, fmt, settings)
        watcher.start()
        outcome = run_federation(config, out=folder, callbacks=callbacks, cancel=cancel, stop=stop)
    except ConfigError as failure:  # refused before the first round: nothing ran
        return _end(sessions, run_id, "failed", " ".join(str(failure).split()))
    except KeyboardInterrupt:  # stopped before the run got going
        return _end(sessions, run_id, "stopped", stop.reason or "stopped")
    finally:
        watcher.done.set()
    with sessions() as session:
        Store(session).record_status(run_id, outcome.status, outcome.error)
    return outcome.status


def _end(sessions: sessionmaker[Session], run_id: str, status: str, error: str) -> str:
    with sessions() as session:
        Store(session).end_run(run_id, status, error)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the job; exit 0 when the run succeeded, was cancelled or stopped."""
    parser = argparse.ArgumentParser(prog="python -m redfl.platform.job")
    parser.add_argument("run_id")
    parser.add_argument("--data", required=True, help="the platform's data folder")
    parser.add_argument(
        "--database-url", default=os.environ.get("REDFL_DATABASE_URL"), help="default: SQLite"
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"database_url": args.database_url}
    settings = Settings.load(args.data, **overrides)
    if settings.ray_nice > 0 and settings.ray_address in (None, "local"):
        lower_priority(os.getpid(), settings.ray_nice)  # Ray starts jobs in sessions of their own
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what StopRequest raises
    streams = sys.stdout, sys.stderr
    with (Path.cwd() / LOG_FILE).open("a", encoding="utf-8", errors="replace") as log:
        sys.stdout, sys.stderr = Tee(streams[0], log), Tee(streams[1], log)
        try:
            status = execute(args.run_id, settings)
            print(f"run {args.run_id}: {status}", flush=True)
        finally:
            sys.stdout, sys.stderr = streams
    return 0 if status in ("succeeded", "cancelled", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
