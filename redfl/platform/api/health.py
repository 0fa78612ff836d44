"""``/api/health`` (database and Ray) and ``/metrics`` (Prometheus).

``status`` is ``ok`` when the database answers and Ray is reachable, ``degraded`` when
either is not: 503 without the database (this server cannot serve), 200 without Ray (it
serves, but runs cannot execute until Ray is back).

Ray is checked without starting or joining it: a TCP connection to the cluster's address
(the GCS port, the Ray client port of ``ray://``, or the job server of ``http://``). With no
address configured, the embedded head is looked up in the data folder (``ray-head.json``):
none running (not started yet, or stopped) is ``degraded``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from redfl.platform.db import ping
from redfl.platform.metrics import CONTENT_TYPE
from redfl.runtime.jobs import read_head

router = APIRouter(tags=["health"])


class RayStatus(BaseModel):
    """Where Ray is expected and whether a TCP connection to it succeeded."""

    address: str | None
    reachable: bool
    detail: str


class Health(BaseModel):
    """``ok`` when the database answers and Ray is reachable, else ``degraded``."""

    status: str
    database: bool
    ray: RayStatus


def _host_port(address: str) -> tuple[str, int] | None:
    if address.startswith(("http://", "https://")):
        parsed = urlparse(address)
        return (parsed.hostname, parsed.port) if parsed.hostname and parsed.port else None
    address = address.removeprefix("ray://")
    host, _, port = address.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def ray_status(
    address: str | None, timeout: float = 1.0, data_dir: Path | None = None
) -> RayStatus:
    """Whether Ray at ``address`` (or the embedded head of ``data_dir`` when ``None``)
    accepts a TCP connection."""
    if address in (None, "local"):
        head = None if data_dir is None else read_head(data_dir)
        if head is None:
            return RayStatus(address=None, reachable=False, detail="no local Ray head running")
        address = head.job_server
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
    """``ok``, or ``degraded`` when the database (503) or Ray (200) is unreachable."""
    database = ping(request.app.state.engine)
    settings = request.app.state.settings
    ray = ray_status(settings.ray_address, data_dir=settings.data_dir)
    body = Health(
        status="ok" if database and ray.reachable else "degraded", database=database, ray=ray
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
