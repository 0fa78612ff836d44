"""The LCP's ASGI app: the device routes behind the routing proxy, ``GET /health``, ``/stats``.

The LCP listens with mutual TLS. The proxy verifies the device's token and passes the device
id in the ``x-redfl-device`` header, on a connection it opened with its own credential; the
LCP takes the header from that caller only (:class:`redfl.edge.routes.ProxiedDevice`: the
client certificate must be the tree's proxy's, not revoked), so a request without the
proxy's certificate, or without the header, gets a 401. Bodies are validated again here.
The device routes are one table (:class:`redfl.edge.routes.Route`), answered on the fast path
of :mod:`redfl.edge.fastpath` and described in the app's OpenAPI schema. ``/stats`` needs an
operator's credential; ``/health`` answers any member of the tree (the proxy checks it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from redfl.edge.fastpath import serve_routes
from redfl.edge.lcp import LcpService
from redfl.edge.protocol import (
    MAX_RESULT_BYTES,
    JobReply,
    JobRequest,
    ResultReply,
    ResultRequest,
    SelectionReply,
    SelectionRequest,
    TaskReply,
    TaskRequest,
)
from redfl.edge.routes import (
    Answer,
    Operator,
    PeerCertificate,
    ProxiedDevice,
    Route,
    guard,
    ok,
)
from redfl.edge.timing import summary
from redfl.trust import KINDS

__all__ = ["lcp_app"]


def lcp_app(service: LcpService) -> FastAPI:
    """Build the app of one LCP; its lifespan runs the sync loop with the server."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(service.run())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title=f"redfl LCP {service.name}", lifespan=lifespan)
    app.state.service = service

    async def job(request: JobRequest, device: str, body: bytes) -> Answer:
        return ok(service.job_reply(request.job_name))

    async def task(request: TaskRequest, device: str, body: bytes) -> Answer:
        return ok(service.task(device, request.job_id))

    async def result(request: ResultRequest, device: str, body: bytes) -> Answer:
        return ok(await service.result(device, request))

    async def selection(request: SelectionRequest, device: str, body: bytes) -> Answer:
        return ok(service.selection())

    if service.member is None:
        raise ValueError(f"LCP {service.name} needs its credential to serve its routes")
    peers = service.member.peers
    proxied = ProxiedDevice(peers)
    serve_routes(
        app,
        [
            Route("/job", JobRequest, JobReply, job, proxied),
            Route("/task", TaskRequest, TaskReply, task, proxied),
            Route("/result", ResultRequest, ResultReply, result, proxied, {}, MAX_RESULT_BYTES),
            Route("/selection", SelectionRequest, SelectionReply, selection, proxied),
        ],
    )
    operator = guard(app, Operator(peers))
    anyone = guard(app, PeerCertificate(peers, dict.fromkeys(KINDS)))

    @app.get("/health", dependencies=[anyone])
    async def health() -> dict[str, object]:
        job = service.job
        return {"status": "OK", "lcp": service.name, "synced": job is not None}

    @app.get("/stats", dependencies=[operator])
    async def stats() -> dict[str, object]:
        """Syncs with the server, results they carried, updates capped or clipped, and time
        per sync and per verdict."""
        return {
            "syncs": service.seq,
            "results": service.synced_results,
            "capped": service.capped,
            "clipped": service.clipped,
            **{name: summary(v) for name, v in service.timings.items()},
        }

    return app
