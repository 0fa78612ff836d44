"""The job that executes one stored run: ``python -m redfl.platform.job RUN_ID --data DIR``.

The platform submits it as a Ray job, so it lives on when the web server stops. It reads the
run's config from the store (checked again by the web rules), calls :func:`redfl.run` on the
run folder and writes every event into the store as it happens: the event stream (what the
WebSocket replays), the round records, the failures and the status changes. At each round's
end it reads the run's ``cancel_requested`` flag; once set, the run stops at that boundary
(model, state and summary saved, status ``cancelled``).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from redfl.core.config import ConfigError
from redfl.core.events import Event, FailureRecorded, RoundFinished
from redfl.platform.db import make_engine, session_factory
from redfl.platform.settings import Settings
from redfl.platform.store import Store
from redfl.platform.tracing import RoundSpans, make_tracer
from redfl.platform.untrusted import parse_web_config
from redfl.run.api import run as run_federation
from redfl.schemas.callbacks import Callback


class StoreSink(Callback):
    """Writes each event of a run into the store; sets ``cancel`` when the run's cancel flag
    is set (read at each round's end)."""

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
    cancel = threading.Event()
    callbacks: list[Callback] = [StoreSink(sessions, run_id, cancel)]
    tracer = make_tracer(settings.otlp_endpoint, "redfl-job")
    if tracer is not None:
        callbacks.append(RoundSpans(tracer, run_id))
    try:
        config = parse_web_config(text, fmt, settings)
        outcome = run_federation(config, out=folder, callbacks=callbacks, cancel=cancel)
        status, error = outcome.status, outcome.error
    except ConfigError as failure:  # refused before the first round: nothing ran
        status, error = "failed", " ".join(str(failure).split())
        with sessions() as session:
            Store(session).end_run(run_id, status, error)
        return status
    with sessions() as session:
        Store(session).record_status(run_id, status, error)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the job; exit 0 when the run succeeded or was cancelled."""
    parser = argparse.ArgumentParser(prog="python -m redfl.platform.job")
    parser.add_argument("run_id")
    parser.add_argument("--data", required=True, help="the platform's data folder")
    parser.add_argument(
        "--database-url", default=os.environ.get("REDFL_DATABASE_URL"), help="default: SQLite"
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"database_url": args.database_url}
    settings = Settings.load(args.data, **overrides)
    status = execute(args.run_id, settings)
    print(f"run {args.run_id}: {status}", flush=True)
    return 0 if status in ("succeeded", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
