"""The LCP's ASGI app: the device routes behind the routing proxy, and ``GET /health``.

The proxy verifies the device's token and passes the device id in the ``x-redfl-device``
header; an LCP listens on 127.0.0.1 only and trusts that header (a request without it gets a
401). Bodies are validated again here, so an LCP is safe to reach directly in tests. The
device routes run on the fast path of :mod:`redfl.edge.fastpath`; the FastAPI routes below
describe them (and answer them when the middleware is absent).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from redfl.edge.errors import ERROR_RESPONSES, install_error_handlers, unauthorized
from redfl.edge.fastpath import FastPath, header_identity
from redfl.edge.lcp import LcpService
from redfl.edge.protocol import (
    JobReply,
    JobRequest,
    ResultReply,
    ResultRequest,
    SelectionReply,
    SelectionRequest,
    TaskReply,
    TaskRequest,
)
from redfl.edge.timing import summary

__all__ = ["DEVICE_HEADER", "lcp_app"]

DEVICE_HEADER = "x-redfl-device"
"""Header in which the proxy passes the verified device id to an LCP."""

_NO_DEVICE = "no device identity: reach LCPs through the routing proxy"


def lcp_app(service: LcpService) -> FastAPI:
    """Build the app of one LCP; its lifespan runs the sync loop with the server."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(service.run())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title=f"redfl LCP {service.name}", lifespan=lifespan, responses=ERROR_RESPONSES)
    app.state.service = service
    install_error_handlers(app)

    async def handle(path: str, body: bytes, request: Any, device: str) -> tuple[int, bytes]:
        if path == "/task":
            reply: BaseModel = service.task(device, request.job_id)
        elif path == "/result":
            reply = await service.result(device, request)
        elif path == "/job":
            reply = service.job_reply(request.job_name)
        else:
            reply = service.selection()
        return 200, reply.model_dump_json().encode()

    requests = {"/job": JobRequest, "/task": TaskRequest, "/result": ResultRequest,
                "/selection": SelectionRequest}  # fmt: skip
    app.add_middleware(FastPath, identify=header_identity, handle=handle, requests=requests)
    Device = Header(default="", alias=DEVICE_HEADER, include_in_schema=False)

    @app.post("/job", response_model=JobReply)
    async def job(body: JobRequest, device: str = Device) -> JobReply | JSONResponse:
        return service.job_reply(body.job_name) if device else unauthorized(_NO_DEVICE)

    @app.post("/task", response_model=TaskReply)
    async def task(body: TaskRequest, device: str = Device) -> TaskReply | JSONResponse:
        return service.task(device, body.job_id) if device else unauthorized(_NO_DEVICE)

    @app.post("/result", response_model=ResultReply)
    async def result(body: ResultRequest, device: str = Device) -> ResultReply | JSONResponse:
        return await service.result(device, body) if device else unauthorized(_NO_DEVICE)

    @app.post("/selection", response_model=SelectionReply)
    async def selection(
        body: SelectionRequest, device: str = Device
    ) -> SelectionReply | JSONResponse:
        return service.selection() if device else unauthorized(_NO_DEVICE)

    @app.get("/health")
    async def health() -> dict[str, object]:
        job = service.job
        return {"status": "OK", "lcp": service.name, "synced": job is not None}

    @app.get("/stats")
    async def stats() -> dict[str, object]:
        """Syncs with the server, results they carried, and time per sync and per verdict."""
        return {
            "syncs": service.seq,
            "results": service.synced_results,
            **{name: summary(v) for name, v in service.timings.items()},
        }

    return app
