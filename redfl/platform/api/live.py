"""``WS /api/runs/{run_id}/ws?token=<access token>``: a run's events, live.

A browser cannot set headers on a WebSocket, so the access token comes as a query
parameter. It is checked as the HTTP routes check a bearer token
(:func:`redfl.platform.api.deps.authenticate`: the same user cache, the same refusals): a
refusal closes the socket with 4000 plus the HTTP status (4401 for a missing, bad or expired
token or a deleted user) and the HTTP reply's detail as the reason, an unknown run with
4404, after accepting it so the browser sees the code. Every role that may read a run
(viewer and up) may follow it.

The socket first sends every stored event of the run in ``seq`` order, then new ones as the
run's job stores them (the server polls the store every ``POLL_SECONDS``; the browser never
polls). Each message is one JSON object: ``{"seq": n, "type": ..., **fields}`` as in
``events.jsonl``; status changes are events of type ``status`` (``{"status": "running"}``).
After the run's final status it closes with code 1000.

``WS /api/live/runs?token=<access token>`` follows the run list: from the moment it opens,
each message is ``{"type": "runs", "runs": [...]}`` with the list rows (as ``GET /api/runs``
gives them) of the runs that changed since the last message: created, started, a round
done, tagged, ended. The server reads the runs changed since its last read (by their
``updated_at``, with ``SKEW_SECONDS`` of overlap for the clocks of the jobs that write them)
every ``LIST_POLL_SECONDS``, and sends each change once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, WebSocket
from pydantic import TypeAdapter
from sqlalchemy.orm import Session, sessionmaker
from starlette.websockets import WebSocketDisconnect

from redfl.platform.api.deps import authenticate, check_role
from redfl.platform.api.schemas import RunOut
from redfl.platform.models import FINAL_STATUSES, utcnow
from redfl.platform.store import Store

router = APIRouter(tags=["runs"])
POLL_SECONDS = 0.1
LIST_POLL_SECONDS = 0.5
SKEW_SECONDS = 2.0
_ROWS = TypeAdapter(list[RunOut])
REFUSED = 4000
"""A refused token closes the socket with this plus the HTTP status (4401, 4403)."""
NOT_FOUND = 4404


def _read(
    sessions: sessionmaker[Session], run_id: str, after: int
) -> tuple[str | None, str | None, list[dict[str, Any]]]:
    """The run's status and error (``None``: no such run) and its events after ``after``."""
    with sessions() as session:
        store = Store(session)
        run = store.get_run(run_id)
        if run is None:
            return None, None, []
        status, error = run.status, run.error
        events = [{"seq": e.seq, "type": e.type, **e.data} for e in store.events(run_id, after)]
    return status, error, events


async def _admit(websocket: WebSocket, token: str | None) -> bool:
    """Accept the socket; whether its token is a viewer's (else it is closed, 4000 plus
    the HTTP status, with the HTTP reply's detail as reason)."""
    await websocket.accept()
    try:
        check_role(await authenticate(websocket, token), "viewer")
    except HTTPException as refused:
        await websocket.close(code=REFUSED + refused.status_code, reason=refused.detail)
        return False
    return True


@router.websocket("/api/live/runs")
async def runs_live(websocket: WebSocket, token: str | None = None) -> None:
    """Send the list rows of the runs that change, as they change, until the client
    leaves."""
    if not await _admit(websocket, token):
        return
    sessions: sessionmaker[Session] = websocket.app.state.sessions
    closed = asyncio.ensure_future(websocket.receive())
    since = utcnow() - timedelta(seconds=SKEW_SECONDS)
    sent: dict[str, datetime] = {}
    try:
        while not closed.done():
            rows = await asyncio.to_thread(_changed, sessions, since)
            fresh = [r for r in rows if sent.get(r["id"]) != r["updated_at"]]
            if fresh:
                body = _ROWS.dump_python(_ROWS.validate_python(fresh), mode="json")
                await websocket.send_json({"type": "runs", "runs": body})
            for row in rows:
                sent[row["id"]] = row["updated_at"]
            if rows:
                since = max(r["updated_at"] for r in rows) - timedelta(seconds=SKEW_SECONDS)
                sent = {k: v for k, v in sent.items() if v >= since}
            await asyncio.wait({closed}, timeout=LIST_POLL_SECONDS)
    except WebSocketDisconnect:
        pass
    finally:
        closed.cancel()


def _changed(sessions: sessionmaker[Session], since: datetime) -> list[dict[str, Any]]:
    with sessions() as session:
        return Store(session).changed_summaries(since)


@router.websocket("/api/runs/{run_id}/ws")
async def run_events(websocket: WebSocket, run_id: str, token: str | None = None) -> None:
    """Stream the run's events: the stored ones, then live ones, until its final status."""
    sessions: sessionmaker[Session] = websocket.app.state.sessions
    if not await _admit(websocket, token):
        return
    closed = asyncio.ensure_future(websocket.receive())  # completes when the client leaves
    try:
        await _stream(websocket, sessions, run_id, closed)
    except WebSocketDisconnect:
        pass
    finally:
        closed.cancel()


async def _stream(
    websocket: WebSocket,
    sessions: sessionmaker[Session],
    run_id: str,
    closed: asyncio.Future[Any],
) -> None:
    last = -1
    while not closed.done():
        status, error, events = await asyncio.to_thread(_read, sessions, run_id, last)
        if status is None:
            await websocket.close(code=NOT_FOUND, reason=f"run {run_id!r} does not exist")
            return
        for event in events:
            await websocket.send_json(event)
            last = event["seq"]
            if event["type"] == "status" and event.get("status") in FINAL_STATUSES:
                await websocket.close(code=1000)
                return
        if status in FINAL_STATUSES:  # final, with no status event stored for it
            body = {"type": "status", "status": status, "time": round(time.time(), 6)}
            await websocket.send_json({**body, "error": error} if error else body)
            await websocket.close(code=1000)
            return
        await asyncio.wait({closed}, timeout=POLL_SECONDS)
