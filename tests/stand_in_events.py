"""TEST FIXTURE, NOT THE PRODUCT: writes a run's events straight into the store, standing in
for the run's job (:mod:`redfl.platform.job`), so the dashboard's rendering is tested without
Ray: a test decides each round's numbers and when it arrives.

The helpers store what the job's ``StoreSink`` stores (round records, failures, the event
stream, status changes through ``record_status``); the real run WebSocket
(``WS /api/runs/{run_id}/ws``) then streams them to the page as it would a real run's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI

from redfl.platform.store import Store
from redfl.run.folder import save_parameters

CLOSING = {
    "succeeded": "run_finished",
    "failed": "run_failed",
    "cancelled": "run_cancelled",
    "stopped": "run_stopped",
}


def _store(app: FastAPI) -> Store:
    return Store(app.state.sessions())


def append_status(app: FastAPI, run_id: str, status: str, error: str | None = None) -> None:
    """Move the run to ``status`` as its job does: a final status first gets its closing
    event (``run_finished``, ``run_failed``, ``run_cancelled``), then the ``status`` event."""
    store = _store(app)
    try:
        if status in CLOSING:
            data: dict[str, Any] = {"rounds": len(store.round_metrics(run_id))}
            if error is not None:
                data["reason" if status == "stopped" else "error"] = error
            store.append_event(run_id, CLOSING[status], data)
        store.record_status(run_id, status, error)
    finally:
        store.session.close()


def append_round(app: FastAPI, run_id: str, rnd: int, accuracy: float, loss: float) -> None:
    """Store round ``rnd``'s record and append its ``round_finished`` event."""
    record = {
        "round": rnd,
        "sampled": 10,
        "succeeded": 10,
        "failed": 0,
        "seconds": 0.01,
        "train_loss": loss * 1.2,
        "loss": loss,
        "accuracy": accuracy,
        "metrics": {},
    }
    store = _store(app)
    try:
        store.add_round_metric(run_id, rnd, record)
        store.append_event(run_id, "round_finished", {"record": record})
    finally:
        store.session.close()


def append_failure(app: FastAPI, run_id: str, rnd: int, node: str, reason: str) -> None:
    """Store a client failure and append its ``failure`` event."""
    store = _store(app)
    try:
        store.add_failure(run_id, rnd, node, "fit", reason)
        failure = {"node_id": node, "round": rnd, "phase": "fit", "reason": reason}
        store.append_event(run_id, "failure", {"failure": failure})
    finally:
        store.session.close()


def write_model(app: FastAPI, run_id: str) -> bytes:
    """Write a small ``model.safetensors`` into the run folder; its bytes."""
    store = _store(app)
    try:
        folder = Path(store.require_run(run_id).run_dir)
    finally:
        store.session.close()
    path = folder / "model.safetensors"
    save_parameters(path, {"w": np.arange(6.0).reshape(2, 3)}, {})
    return path.read_bytes()


def write_event(folder: Path, **event: Any) -> None:
    """Append ``event`` to the run folder's ``events.jsonl``, as a sites run's server does
    (``site_joined``, ``site_round``, ``failure``, ...)."""
    with (folder / "events.jsonl").open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(event) + "\n")


def site_failure(folder: Path, site: str, round_: int, time: float) -> None:
    """Append a fit failure of ``site`` in round ``round_``."""
    failure = {"node_id": site, "round": round_, "phase": "fit", "reason": "not connected"}
    write_event(folder, type="failure", time=time, failure=failure)
