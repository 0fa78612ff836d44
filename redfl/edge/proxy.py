"""The routing proxy: the devices' HTTP entry, an ASGI app served by uvicorn.

It enrols devices as the tree's enrolment mode says (``POST /enroll``, see
:mod:`redfl.edge.fleet`: tokens issued in advance, the operator's verifier, or the shared
secret of development mode), verifies the token on every other request against the device
register (a revoked device is refused at its next request) and takes the device id from it
(never from a header or body the device controls). Every request is identified from its
headers before its body is read, and a body over the route's cap is refused with 413 before
it is buffered. The proxy picks the device's LCP by rendezvous hashing
(:mod:`redfl.edge.hashing`) among the LCPs that pass their health check, and forwards the
body unchanged over a kept-alive, mutually authenticated TLS connection made with the proxy's
own credential (the LCP must be that LCP of the tree). A device whose LCP is down goes to its
next choice (at once, when a forward fails, and for everyone after the next health check),
and returns home when its LCP is back. When no LCP answers, the device is told to ``RETRY``.
``GET /stats`` needs an operator's credential; ``GET /health`` is public (liveness only).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from redfl.edge.errors import Unauthorized, error_body
from redfl.edge.fastpath import serve_routes
from redfl.edge.fleet import Fleet
from redfl.edge.forward import ForwardError, LcpConnections
from redfl.edge.hashing import choose
from redfl.edge.protocol import (
    FORWARDED_ROUTES,
    MAX_RESULT_BYTES,
    EnrollReply,
    EnrollRequest,
    Status,
)
from redfl.edge.provision import Member
from redfl.edge.routes import (
    DEVICE_HEADER,
    MAX_BODY,
    Answer,
    DeviceToken,
    Handler,
    Operator,
    Public,
    Route,
    guard,
    ok,
)
from redfl.edge.timing import summary

__all__ = ["Router", "proxy_app"]


def _host_port(url: str) -> tuple[str, int]:
    """``https://host:port`` -> ``(host, port)``."""
    parsed = httpx.URL(url)
    return parsed.host, parsed.port or 443


class Router:
    """LCP health and the device -> LCP choice.

    Parameters
    ----------
    lcps : dict[str, str]
        LCP name -> base URL (``https://``).
    member : Member
        The proxy's credential (TLS to the LCPs) and the verifier of the LCPs.
    retry_wait : float, default 1.0
        ``retry_wait`` told to devices when no LCP answers.
    max_misses : int, default 2
        Failed health checks in a row that mark an LCP down.
    """

    def __init__(
        self,
        lcps: dict[str, str],
        member: Member,
        retry_wait: float = 1.0,
        max_misses: int = 2,
    ) -> None:
        self.urls = dict(lcps)
        self.member = member
        self.max_misses = max_misses
        self.misses: Counter[str] = Counter()
        tls = member.client_tls()
        self.pools = {
            name: LcpConnections(
                *_host_port(url), ssl=tls, expect=member.peers.acceptor({"lcp": (name,)})
            )
            for name, url in lcps.items()
        }
        self.retry_wait = retry_wait
        self.up = dict.fromkeys(lcps, True)
        self._ranked: dict[str, list[str]] = {}
        self.forwards: Counter[str] = Counter()
        self.failovers = 0  # requests served by an LCP other than the device's home
        self.latency: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=100_000))

    def ranked(self, device: str) -> list[str]:
        """The device's LCPs, best first (cached: it depends on the names only)."""
        ranked = self._ranked.get(device)
        if ranked is None:
            ranked = self._ranked[device] = choose(device, self.urls)
        return ranked

    def candidates(self, device: str) -> list[str]:
        """The device's LCPs that are up, best first."""
        return [lcp for lcp in self.ranked(device) if self.up[lcp]]

    async def forward(self, path: str, body: bytes, device: str) -> Answer | None:
        """Send a device request to its first LCP that answers; None when none does."""
        start = time.perf_counter()
        headers = {DEVICE_HEADER: device, "content-type": "application/json"}
        home = self.ranked(device)[0]
        for lcp in self.candidates(device):
            try:
                answer = await self.pools[lcp].post(path, body, headers)
            except ForwardError:
                self.up[lcp] = False  # until the next health check says otherwise
                continue
            self.forwards[lcp] += 1
            self.failovers += lcp != home
            self.latency[path].append(time.perf_counter() - start)
            return answer
        return None

    def forwarding(self, path: str, reply: type[BaseModel]) -> Handler[BaseModel]:
        """The handler of a forwarded route: the LCP's answer, or ``RETRY`` (with
        ``retry_wait`` when the reply has it) when no LCP answers."""
        extra = {"retry_wait": self.retry_wait} if "retry_wait" in reply.model_fields else {}
        retry = ok(reply(status=Status.RETRY, reason="no LCP is reachable", **extra))

        async def forward(request: BaseModel, device: str, body: bytes) -> Answer:
            return await self.forward(path, body, device) or retry

        return forward

    async def check(self, client: httpx.AsyncClient, timeout: float) -> None:
        """Health-check every LCP once (``GET /health`` must answer 200 and be synced)."""

        async def one(lcp: str) -> bool:
            try:
                response = await client.get(f"{self.urls[lcp]}/health", timeout=timeout)
                return response.status_code == 200 and bool(response.json().get("synced"))
            except (httpx.HTTPError, ValueError):
                return False

        results = await asyncio.gather(*(one(lcp) for lcp in self.urls))
        for lcp, healthy in zip(self.urls, results, strict=True):
            self.misses[lcp] = 0 if healthy else self.misses[lcp] + 1
            # up again at the first answer; down after `max_misses` checks in a row (a busy
            # LCP that answers late is not dropped at once; a refused forward drops it at once)
            self.up[lcp] = healthy or (self.up[lcp] and self.misses[lcp] < self.max_misses)


def proxy_app(
    lcps: dict[str, str],
    fleet: Fleet,
    member: Member,
    health_interval: float = 0.5,
    retry_wait: float = 1.0,
) -> FastAPI:
    """Build the routing proxy's app.

    Parameters
    ----------
    lcps : dict[str, str]
        LCP name -> base URL (``https://``).
    fleet : Fleet
        Enrols devices and verifies their tokens against the device register.
    member : Member
        The proxy's credential and the verifier of the LCPs and of operators.
    health_interval : float, default 0.5
        Seconds between health checks of the LCPs.
    retry_wait : float, default 1.0
        ``retry_wait`` told to devices when no LCP answers.
    """
    router = Router(lcps, member, retry_wait)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5.0, verify=member.client_tls()) as client:

            async def watch() -> None:
                while True:
                    await router.check(client, timeout=max(2.0, health_interval))
                    await asyncio.sleep(health_interval)

            watcher = asyncio.create_task(watch())
            try:
                yield
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                for pool in router.pools.values():
                    pool.close()

    app = FastAPI(title="redfl edge routing proxy", description=__doc__, lifespan=lifespan)
    app.state.router = router
    app.state.fleet = fleet

    async def enroll(body: EnrollRequest, caller: str, raw: bytes) -> Answer:
        try:
            token, expires = await fleet.enroll(body.device_id, body.secret)
        except Unauthorized as exc:
            return 401, error_body(Status.ERROR, str(exc))
        return ok(EnrollReply(status=Status.OK, token=token, expires_at=expires))

    device_token = DeviceToken(fleet.verify)
    forwarded = [
        Route(
            path,
            request,
            reply,
            router.forwarding(path, reply),
            device_token,
            max_body=MAX_RESULT_BYTES if path == "/result" else MAX_BODY,
        )
        for path, (request, reply) in FORWARDED_ROUTES.items()
    ]
    refusal = {401: "Enrolment closed, a bad credential, an id bound to another, or revoked"}
    routes: list[Route[Any]] = [
        Route("/enroll", EnrollRequest, EnrollReply, enroll, Public(), refusal, 8 * 1024),
        *forwarded,
    ]
    serve_routes(app, routes)
    operator = guard(app, Operator(member.peers))

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness of the proxy itself."""
        return {"status": "OK"}

    @app.get("/stats", dependencies=[operator])
    async def stats() -> dict[str, object]:
        """LCP health, forwards per LCP, failovers, and time spent per route in the proxy
        (from the body read to the LCP's answer)."""
        latency = {path: summary(v) for path, v in router.latency.items()}
        return {
            "up": router.up,
            "forwards": dict(router.forwards),
            "failovers": router.failovers,
            "latency": latency,
        }

    return app
