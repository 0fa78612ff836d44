"""The routing proxy: the devices' HTTP entry, an ASGI app served by uvicorn.

It enrols devices (``POST /enroll`` with the project's enrollment secret returns a signed
token), verifies the token on every other request and takes the device id from it (never from
a header or body the device controls), picks the device's LCP by rendezvous hashing
(:mod:`redfl.edge.hashing`) among the LCPs that pass their health check, and forwards the
body unchanged over a kept-alive connection. A device whose LCP is down goes to its next
choice (at once, when a forward fails, and for everyone after the next health check), and
returns home when its LCP is back. When no LCP answers, the device is told to ``RETRY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from redfl.edge.errors import ERROR_RESPONSES, install_error_handlers, unauthorized
from redfl.edge.fastpath import FastPath, token_identity
from redfl.edge.forward import ForwardError, LcpConnections
from redfl.edge.hashing import choose
from redfl.edge.lcp_app import DEVICE_HEADER
from redfl.edge.protocol import (
    EnrollReply,
    EnrollRequest,
    ErrorReply,
    JobReply,
    JobRequest,
    ResultReply,
    ResultRequest,
    SelectionReply,
    SelectionRequest,
    Status,
    TaskReply,
    TaskRequest,
)
from redfl.edge.timing import summary
from redfl.edge.tokens import TokenError, TokenSigner, secret_matches

__all__ = ["Router", "proxy_app"]

REPLIES: dict[str, type[JobReply | TaskReply | ResultReply | SelectionReply]] = {
    "/job": JobReply,
    "/task": TaskReply,
    "/result": ResultReply,
    "/selection": SelectionReply,
}
"""Reply model of each forwarded route."""
REQUESTS: dict[str, type[JobRequest | TaskRequest | ResultRequest | SelectionRequest]] = {
    "/job": JobRequest,
    "/task": TaskRequest,
    "/result": ResultRequest,
    "/selection": SelectionRequest,
}
"""Request model of each forwarded route."""


def _host_port(url: str) -> tuple[str, int]:
    """``http://host:port`` -> ``(host, port)``."""
    parsed = httpx.URL(url)
    return parsed.host, parsed.port or 80


class Unauthorized(Exception):
    """A request without a valid token (answered with 401)."""


class Router:
    """LCP health and the device -> LCP choice.

    Parameters
    ----------
    lcps : dict[str, str]
        LCP name -> base URL.
    retry_wait : float, default 1.0
        ``retry_wait`` told to devices when no LCP answers.
    max_misses : int, default 2
        Failed health checks in a row that mark an LCP down.
    """

    def __init__(self, lcps: dict[str, str], retry_wait: float = 1.0, max_misses: int = 2) -> None:
        self.urls = dict(lcps)
        self.max_misses = max_misses
        self.misses: Counter[str] = Counter()
        self.pools = {name: LcpConnections(*_host_port(url)) for name, url in lcps.items()}
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

    async def forward(self, path: str, body: bytes, device: str) -> tuple[int, bytes]:
        """Send a device request to its first LCP that answers; ``RETRY`` when none does."""
        start = time.perf_counter()
        headers = {DEVICE_HEADER: device, "content-type": "application/json"}
        home = self.ranked(device)[0]
        for lcp in self.candidates(device):
            try:
                status, content = await self.pools[lcp].post(path, body, headers)
            except ForwardError:
                self.up[lcp] = False  # until the next health check says otherwise
                continue
            self.forwards[lcp] += 1
            self.failovers += lcp != home
            self.latency[path].append(time.perf_counter() - start)
            return status, content
        model = REPLIES[path]
        extra = {"retry_wait": self.retry_wait} if "retry_wait" in model.model_fields else {}
        return 200, model(
            status=Status.RETRY, reason="no LCP is reachable", **extra
        ).model_dump_json().encode()

    async def check(self, client: httpx.AsyncClient, timeout: float) -> None:
        """Health-check every LCP once (``GET /health`` must answer 200 and be synced)."""

        async def one(lcp: str) -> bool:
            try:
                response = await client.get(f"{self.urls[lcp]}/health", timeout=timeout)
                return response.status_code == 200 and bool(response.json().get("synced"))
            except (httpx.HTTPError, ValueError):
                return False

        results = await asyncio.gather(*(one(lcp) for lcp in self.urls))
        for lcp, ok in zip(self.urls, results, strict=True):
            self.misses[lcp] = 0 if ok else self.misses[lcp] + 1
            # up again at the first answer; down after `max_misses` checks in a row (a busy
            # LCP that answers late is not dropped at once; a refused forward drops it at once)
            self.up[lcp] = ok or (self.up[lcp] and self.misses[lcp] < self.max_misses)


def proxy_app(
    lcps: dict[str, str],
    signer: TokenSigner,
    enroll_secret: str,
    health_interval: float = 0.5,
    retry_wait: float = 1.0,
) -> FastAPI:
    """Build the routing proxy's app.

    Parameters
    ----------
    lcps : dict[str, str]
        LCP name -> base URL.
    signer : TokenSigner
        Issues and verifies device tokens.
    enroll_secret : str
        The project's enrollment secret.
    health_interval : float, default 0.5
        Seconds between health checks of the LCPs.
    retry_wait : float, default 1.0
        ``retry_wait`` told to devices when no LCP answers.
    """
    router = Router(lcps, retry_wait)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5.0) as client:

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

    app = FastAPI(
        title="redfl edge routing proxy",
        description=__doc__,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.router = router

    async def handle(path: str, body: bytes, request: object, device: str) -> tuple[int, bytes]:
        if isinstance(request, EnrollRequest):
            return enroll_device(request)
        return await router.forward(path, body, device)

    def enroll_device(body: EnrollRequest) -> tuple[int, bytes]:
        if not secret_matches(body.secret, enroll_secret):
            refused = ErrorReply(status=Status.ERROR, reason="bad enrollment secret")
            return 401, refused.model_dump_json().encode()
        token, expires = signer.issue(body.device_id)
        reply = EnrollReply(status=Status.OK, token=token, expires_at=expires)
        return 200, reply.model_dump_json().encode()

    identify = token_identity(signer)
    routes = {**REQUESTS, "/enroll": EnrollRequest}
    app.add_middleware(
        FastPath, identify=identify, handle=handle, requests=routes, public={"/enroll"}
    )
    install_error_handlers(app)

    async def on_unauthorized(request: Request, exc: Exception) -> Response:
        return unauthorized(str(exc))

    app.add_exception_handler(Unauthorized, on_unauthorized)
    bearer = Depends(HTTPBearer(auto_error=False))

    async def device_of(credentials: HTTPAuthorizationCredentials | None = bearer) -> str:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>' from /enroll")
        try:
            return signer.verify(credentials.credentials)
        except TokenError as exc:
            raise Unauthorized(str(exc)) from None

    authenticated = Depends(device_of)

    async def forward(path: str, request: Request, device: str) -> Response:
        status, content = await router.forward(path, await request.body(), device)
        return Response(content, status, media_type="application/json")

    @app.post("/enroll", response_model=EnrollReply)
    async def enroll(body: EnrollRequest) -> Response:
        """Exchange the enrollment secret for a token bound to ``device_id``."""
        status, content = enroll_device(body)
        return Response(content, status, media_type="application/json")

    @app.post("/job", response_model=JobReply)
    async def job(body: JobRequest, request: Request, device: str = authenticated) -> Response:
        """Ask for a job by name: its id, or ``NO_JOB``."""
        return await forward("/job", request, device)

    @app.post("/task", response_model=TaskReply)
    async def task(body: TaskRequest, request: Request, device: str = authenticated) -> Response:
        """Ask for a task: parameters and config, ``NO_TASK``/``RETRY``, or ``DONE``."""
        return await forward("/task", request, device)

    @app.post("/result", response_model=ResultReply)
    async def result(
        body: ResultRequest, request: Request, device: str = authenticated
    ) -> Response:
        """Report a task's update (local model minus the task's model)."""
        return await forward("/result", request, device)

    @app.post("/selection", response_model=SelectionReply)
    async def selection(
        body: SelectionRequest, request: Request, device: str = authenticated
    ) -> Response:
        """The devices selected now, the model version, and whether the job is done."""
        return await forward("/selection", request, device)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness of the proxy itself."""
        return {"status": "OK"}

    @app.get("/stats")
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
