"""TEST FIXTURE, NOT THE PRODUCT: a stand-in for the run event stream, to test the dashboard's
rendering before run execution and the real WebSocket land (branch wip-web).

:func:`add_stand_in_socket` adds ``WS /api/runs/{run_id}/ws?token=...`` to an app that has
none, speaking the agreed contract: every stored event of the run in ``seq`` order, then new
ones as they are stored, each one JSON text message ``{"seq", "type", **data}``; closed with
1000 after a terminal event, 4401 for a bad token. The ``append_*`` helpers write a run's
rounds, failures and status straight into the store, as an executor would.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, WebSocket

from redfl.platform.security import InvalidToken
from redfl.platform.store import Store
from redfl.rundir import save_parameters

WS_PATH = "/api/runs/{run_id}/ws"
TERMINAL = {"run_finished", "run_failed", "run_cancelled"}


def add_stand_in_socket(app: FastAPI) -> bool:
    """Add the stand-in WebSocket route unless the app already has one; whether it did."""
    if any(getattr(r, "path", None) == WS_PATH for r in app.router.routes):
        return False

    async def stream(websocket: WebSocket, run_id: str, token: str = "") -> None:
        await websocket.accept()
        try:
            app.state.tokens.decode_access(token)
        except InvalidToken:
            await websocket.close(code=4401)
            return
        closed = asyncio.ensure_future(websocket.receive())
        sent = -1
        try:
            while not closed.done():
                with app.state.sessions() as session:
                    events = Store(session).events(run_id, sent)
                for event in events:
                    await websocket.send_json({"seq": event.seq, "type": event.type, **event.data})
                    sent = event.seq
                    if event.type in TERMINAL:
                        await websocket.close(code=1000)
                        return
                await asyncio.wait({closed}, timeout=0.05)
        finally:
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await closed

    app.add_api_websocket_route(WS_PATH, stream)
    return True


def _store(app: FastAPI) -> Store:
    return Store(app.state.sessions())


def append_status(app: FastAPI, run_id: str, status: str, error: str | None = None) -> None:
    """Move the run to ``status`` and append the matching event (``status``, or the terminal
    ``run_*`` event of a final status)."""
    store = _store(app)
    try:
        run = store.set_status(run_id, status, error)
        terminal = {
            "succeeded": "run_finished",
            "failed": "run_failed",
            "cancelled": "run_cancelled",
        }
        if status in terminal:
            done = len(store.round_metrics(run_id))
            data: dict[str, Any] = {"rounds": done}
            if error is not None:
                data["error"] = error
            store.append_event(run_id, terminal[status], data)
        else:
            store.append_event(run_id, "status", {"status": run.status})
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
