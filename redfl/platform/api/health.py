"""``/api/health`` (database reachable; Ray reported) and ``/metrics`` (Prometheus).

Ray is checked without starting or joining it: a TCP connection to the cluster's address
(the GCS port, or the Ray client port of ``ray://``). With no address configured, a local
head is looked up in Ray's ``ray_current_cluster`` file; none running is reported, not an
error (the executor starts one when a run needs it).
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from redfl.platform.db import ping
from redfl.platform.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])
CURRENT_CLUSTER = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"


class RayStatus(BaseModel):
    """Where Ray is expected and whether a TCP connection to it succeeded."""

    address: str | None
    reachable: bool
    detail: str


class Health(BaseModel):
    """``ok`` when the database answers; Ray's status is reported alongside."""

    status: str
    database: bool
    ray: RayStatus


def _host_port(address: str) -> tuple[str, int] | None:
    address = address.removeprefix("ray://")
    host, _, port = address.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def ray_status(address: str | None, timeout: float = 1.0) -> RayStatus:
    """Whether Ray at ``address`` (or the local head when ``None``/``auto``) accepts a TCP
    connection."""
    if address in (None, "auto", "local"):
        try:
            found = CURRENT_CLUSTER.read_text(encoding="utf-8").strip()
        except OSError:
            return RayStatus(address=address, reachable=False, detail="no local Ray head running")
        address = found
    target = _host_port(address or "")
    if target is None:
        return RayStatus(address=address, reachable=False, detail="address is not host:port")
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as error:
        return RayStatus(address=address, reachable=False, detail=f"cannot connect: {error}")
    return RayStatus(address=address, reachable=True, detail="accepts connections")


@router.get(
    "/api/health", response_model=Health, responses={503: {"description": "Database unreachable"}}
)
def health(request: Request) -> Any:
    """Database reachable (200, else 503); Ray's reachability as a field."""
    database = ping(request.app.state.engine)
    body = Health(
        status="ok" if database else "unavailable",
        database=database,
        ray=ray_status(request.app.state.settings.ray_address),
    )
    return JSONResponse(body.model_dump(), status_code=200 if database else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    """The platform's metrics in the Prometheus text format."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE)
