"""The app factory: ``create_app(settings)`` wires the store, tokens, routes and middleware."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from redfl.platform.api import (
    artifacts,
    auth,
    catalog,
    dashboard,
    health,
    live,
    projects,
    runs,
    users,
)
from redfl.platform.api.errors import install_error_handlers
from redfl.platform.api.known_users import KnownUsers
from redfl.platform.api.limits import BodyLimit
from redfl.platform.api.middleware import RequestContext
from redfl.platform.db import make_engine, session_factory, upgrade
from redfl.platform.metrics import PlatformMetrics
from redfl.platform.metrics_feed import MetricsFeed
from redfl.platform.security import TokenService
from redfl.platform.settings import Settings, ensure_data_dir, load_or_create_secret
from redfl.platform.store import Store
from redfl.platform.tracing import TracingMiddleware, make_tracer

DESCRIPTION = """The redfl platform: users and roles, projects, runs and their metrics.

Authenticate with `POST /api/auth/login`, then send `Authorization: Bearer <access_token>`.
Viewers read; researchers create projects and runs and cancel their own runs; admins manage
users and everything. An error is a JSON object whose `detail` is one line; a 422 also names
the first bad `field`.
"""


def _runs_by_status(app: FastAPI) -> dict[str, int]:
    with app.state.sessions() as session:
        return Store(session).runs_by_status()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Background tasks while the app serves: the metrics feed and, with ``execute``, the
    run queue (:class:`~redfl.platform.executor.Executor`)."""
    tasks = [asyncio.ensure_future(MetricsFeed(app.state.sessions, app.state.metrics).serve())]
    if app.state.execute:
        from redfl.platform.executor import Executor  # imports Ray's job client

        executor = Executor(app.state.settings, app.state.sessions)
        tasks.append(asyncio.ensure_future(executor.serve()))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
        version="0.1.0",
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=_lifespan,
    )
    app.state.execute = execute
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.known_users = KnownUsers(settings.user_cache_seconds)
    app.state.tokens = TokenService(
        load_or_create_secret(settings.data_dir), settings.access_token_seconds
    )
    install_error_handlers(app)
    app.state.metrics = PlatformMetrics(lambda: _runs_by_status(app))
    # The busiest routes first: a request is matched against the routers in this order.
    for module in (runs, artifacts, auth, users, projects, live, catalog, health, dashboard):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)  # innermost
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        )
    tracer = make_tracer(settings.otlp_endpoint, "redfl-platform")
    if tracer is not None:
        app.add_middleware(TracingMiddleware, tracer=tracer)
    app.add_middleware(RequestContext, metrics=app.state.metrics)  # outermost
    return app
