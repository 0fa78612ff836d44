"""Downloads of a run: its model (safetensors), its metrics (CSV, JSON), its events (paged),
its failures (paged) and its log (``run.log`` of the run folder, read piece by piece)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import FileResponse, Response

from redfl.platform.api.deps import RunIdPath, StoreDep, Viewer
from redfl.platform.api.schemas import FailureOut, LogOut

router = APIRouter(prefix="/api/runs", tags=["runs"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such run, or no such file yet"}
}
LOG_FILE = "run.log"
MAX_LOG_PIECE = 1_000_000
COLUMNS = ("round", "sampled", "succeeded", "failed", "seconds", "train_loss", "loss", "accuracy")
"""The fixed columns of the CSV (a round record's fields); its ``metrics`` follow as
``metrics.<name>``."""


def metrics_csv(records: list[dict[str, Any]]) -> str:
    """The round records as CSV: fixed columns, then every metric name seen, sorted.

    Examples
    --------
    >>> print(metrics_csv([{"round": 1, "loss": 0.5, "metrics": {"eps": 2.0}}]), end="")
    round,sampled,succeeded,failed,seconds,train_loss,loss,accuracy,metrics.eps
    1,,,,,,0.5,,2.0
    """
    names = sorted({k for r in records for k in (r.get("metrics") or {})})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*COLUMNS, *(f"metrics.{n}" for n in names)])
    for record in records:
        extra = record.get("metrics") or {}
        row = [record.get(c) for c in COLUMNS] + [extra.get(n) for n in names]
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


@router.get(
    "/{run_id}/model",
    responses={**NOT_FOUND, 200: {"content": {"application/octet-stream": {}}}},
    response_class=FileResponse,
)
def download_model(run_id: RunIdPath, _: Viewer, store: StoreDep) -> FileResponse:
    """The run's final model (``model.safetensors``); 404 until the run has written it."""
    run = store.require_run(run_id)
    path = Path(run.run_dir) / "model.safetensors"
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"run {run_id!r} has no model yet")
    return FileResponse(
        path, media_type="application/octet-stream", filename=f"{run.name}-{run.id}.safetensors"
    )


@router.get(
    "/{run_id}/metrics.csv",
    responses={**NOT_FOUND, 200: {"content": {"text/csv": {}}}},
    response_class=Response,
)
def download_metrics_csv(run_id: RunIdPath, _: Viewer, store: StoreDep) -> Response:
    """The run's per-round metrics as CSV."""
    return Response(
        metrics_csv(store.require_round_metrics(run_id)),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{run_id}-metrics.csv"'},
    )


@router.get("/{run_id}/metrics.json", responses=NOT_FOUND)
def download_metrics_json(run_id: RunIdPath, _: Viewer, store: StoreDep) -> Response:
    """The run's per-round metrics as a JSON list (one round record each)."""
    return Response(
        json.dumps(store.require_round_metrics(run_id)),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{run_id}-metrics.json"'},
    )


@router.get("/{run_id}/events", responses=NOT_FOUND)
def list_events(
    run_id: RunIdPath,
    _: Viewer,
    store: StoreDep,
    after: Annotated[int, Query(ge=-1, le=2**31 - 1)] = -1,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 100_000,
) -> list[dict[str, Any]]:
    """The run's events with ``seq > after`` (what a late WebSocket subscriber replays), at
    most ``limit`` of them: page on with ``after`` = the last ``seq`` received."""
    store.check_run(run_id)
    return [
        {"seq": e.seq, "type": e.type, "data": e.data, "time": e.created_at.isoformat()}
        for e in store.events(run_id, after, limit)
    ]


@router.get("/{run_id}/failures", responses=NOT_FOUND)
def list_failures(
    run_id: RunIdPath,
    _: Viewer,
    store: StoreDep,
    response: Response,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[FailureOut]:
    """The run's client failures in the order they were stored, a page of ``limit`` from
    ``offset`` (``X-Total-Count`` says how many there are)."""
    store.check_run(run_id)
    response.headers["X-Total-Count"] = str(store.count_failures(run_id))
    return [
        FailureOut(round=f.round, node=f.node, phase=f.phase, reason=f.reason)
        for f in store.failures(run_id, offset, limit)
    ]


@router.get("/{run_id}/log", responses=NOT_FOUND)
def read_log(
    run_id: RunIdPath,
    _: Viewer,
    store: StoreDep,
    offset: Annotated[int, Query(ge=-MAX_LOG_PIECE, le=2**62)] = -65_536,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_PIECE)] = 65_536,
) -> LogOut:
    """A piece of the run's log (what its job printed, Ray's worker output included): up to
    ``limit`` bytes from byte ``offset``; a negative ``offset`` counts from the end (the
    default: the last 64 KiB). Follow a growing log with ``offset`` = the reply's ``next``.
    """
    path = Path(store.require_run(run_id).run_dir) / LOG_FILE
    try:
        with path.open("rb") as stream:
            size = stream.seek(0, 2)
            start = max(0, size + offset) if offset < 0 else min(offset, size)
            stream.seek(start)
            piece = stream.read(limit)
    except FileNotFoundError:
        size, start, piece = 0, 0, b""
    return LogOut(
        offset=start,
        next=start + len(piece),
        size=size,
        text=piece.decode("utf-8", "replace"),
    )
