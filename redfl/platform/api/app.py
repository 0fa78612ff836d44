"""The app factory: ``create_app(settings)`` wires the store, tokens, routes and middleware."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from redfl.platform.api import (
    artifacts,
    auth,
    catalog,
    dashboard,
    deployments,
    docs,
    edge,
    health,
    live,
    projects,
    runs,
    sites,
    users,
)
from redfl.platform.api.errors import SafeJSONResponse, install_error_handlers
from redfl.platform.api.known_users import KnownUsers
from redfl.platform.api.limits import BodyLimit
from redfl.platform.api.middleware import RequestContext
from redfl.platform.api.revoked import RevokedTokens
from redfl.platform.cluster import ClusterView
from redfl.platform.db import make_engine, session_factory, upgrade
from redfl.platform.edge import EdgeError
from redfl.platform.metrics import PlatformMetrics
from redfl.platform.metrics_feed import MetricsFeed
from redfl.platform.models import utcnow
from redfl.platform.security import TokenService
from redfl.platform.serving import ModelServer
from redfl.platform.settings import Settings, ensure_data_dir, load_or_create_secret
from redfl.platform.sites import ensure_sites_home
from redfl.platform.store import Store
from redfl.platform.tracing import TracingMiddleware, make_tracer

LOG = logging.getLogger("redfl.platform")
HOUSEKEEPING_SECONDS = 3600.0
DESCRIPTION = """The redfl platform: users and roles, projects, runs, metrics, served models.

Authenticate with `POST /api/auth/login`, then send `Authorization: Bearer <access_token>`.
Viewers read and ask served models for predictions; researchers create projects and runs,
cancel or stop their own runs and serve their models; admins manage users and everything.
An error is a JSON object whose `detail` is one line; a 422 also names the first bad `field`.
"""


def _runs_by_status(app: FastAPI) -> dict[str, int]:
    with app.state.sessions() as session:
        return Store(session).runs_by_status()


def housekeeping(app: FastAPI) -> int:
    """Delete login attempts older than ``login_retention_seconds`` and expired token
    revocations and refresh tokens; how many rows went."""
    settings: Settings = app.state.settings
    now = utcnow()
    with app.state.sessions() as session:
        return Store(session).prune(now - timedelta(seconds=settings.login_retention_seconds), now)


async def _every(seconds: float, work: Callable[[FastAPI], Any], app: FastAPI) -> None:
    """``work(app)`` in a thread every ``seconds`` until cancelled."""
    while True:
        try:
            await asyncio.to_thread(work, app)
        except Exception:  # a database hiccup must not end the task
            LOG.exception("housekeeping failed", extra={"event": "housekeeping_error"})
        await asyncio.sleep(seconds)


async def _reconcile_models(app: FastAPI) -> None:
    """Bring the stored deployments and Ray Serve in line once, as the server starts
    (:meth:`~redfl.platform.serving.ModelServer.reconcile`)."""
    try:
        found = await asyncio.to_thread(app.state.models.reconcile)
    except Exception:  # Ray Serve unreachable: the deployments keep their status
        LOG.exception("reconciling deployments failed", extra={"event": "reconcile_error"})
        return
    if found:
        LOG.info("deployments reconciled", extra={"event": "deployments_reconciled", **found})


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Background tasks while the app serves: the metrics feed, revocations of other
    servers, housekeeping and, with ``execute``, the run queue
    (:class:`~redfl.platform.executor.Executor`)."""
    settings: Settings = app.state.settings
    work: list[Coroutine[Any, Any, None]] = [
        MetricsFeed(app.state.sessions, app.state.metrics).serve(),
        app.state.revoked.follow(app.state.sessions, settings.revocation_poll_seconds),
        _every(HOUSEKEEPING_SECONDS, housekeeping, app),
    ]
    if app.state.execute:
        from redfl.platform.executor import Executor  # imports Ray's job client

        work.append(Executor(settings, app.state.sessions).serve())
        work.append(_reconcile_models(app))
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for deployment in app.state.edge.values():
            deployment.close()


def create_app(settings: Settings, execute: bool = False) -> FastAPI:
    """The platform's ASGI app for ``settings``.

    Creates the data folder and the JWT secret on first start and, unless
    ``settings.auto_upgrade`` is off, applies the shipped migrations. With ``execute`` (what
    ``redfl serve`` does) queued runs are executed as Ray jobs; without it they stay queued.
    """
    ensure_data_dir(settings.data_dir)
    engine = make_engine(settings.url)
    if settings.auto_upgrade:
        upgrade(engine)
    app = FastAPI(
        title="redfl platform",
        version="0.2.0",
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        default_response_class=SafeJSONResponse,
        lifespan=_lifespan,
    )
    app.state.execute = execute
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.known_users = KnownUsers(settings.user_cache_seconds)
    app.state.revoked = RevokedTokens()
    app.state.revoked.load(app.state.sessions)
    app.state.cluster = ClusterView(settings)
    app.state.models = ModelServer(settings, app.state.sessions)
    ensure_sites_home(settings)
    app.state.edge = edge.open_deployments(settings)
    app.state.tokens = TokenService(
        load_or_create_secret(settings.data_dir), settings.access_token_seconds
    )
    install_error_handlers(app)
    app.add_exception_handler(EdgeError, edge.edge_error)
    app.state.metrics = PlatformMetrics(lambda: _runs_by_status(app))
    # The busiest routes first: a request is matched against the routers in this order.
    for module in (
        runs,
        artifacts,
        auth,
        users,
        projects,
        deployments,
        sites,
        edge,
        live,
        catalog,
        health,
        dashboard,
    ):
        app.include_router(module.router)
    if settings.docs:
        app.include_router(docs.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)  # innermost
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        )
    tracer = make_tracer(settings.otlp_endpoint, "redfl-platform")
    if tracer is not None:
        app.add_middleware(TracingMiddleware, tracer=tracer)
    app.add_middleware(RequestContext, metrics=app.state.metrics)  # outermost
    return app
