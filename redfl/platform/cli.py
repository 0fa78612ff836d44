"""Platform commands of ``redfl``: ``serve``, ``users create|passwd|list``, ``db upgrade``,
``head status|stop``.

:func:`register` adds them to the main Typer app. The platform's dependencies (FastAPI,
SQLAlchemy, ...) are imported when a command runs, so ``redfl run`` works without them.
"""

from __future__ import annotations

import getpass
import sys
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from redfl.platform.settings import Settings

DataOption = Annotated[
    str, typer.Option("--data", help="Data folder: SQLite store, JWT secret, run folders.")
]
UrlOption = Annotated[
    str | None,
    typer.Option("--database-url", help="postgresql+psycopg://... (default: SQLite in --data)."),
]
DEFAULT_DATA = "redfl-data"


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"redfl: error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def _require_platform() -> None:
    """Exit 2 with the install hint when the ``platform`` extra is missing."""
    try:
        import alembic  # noqa: F401
        import argon2  # noqa: F401
        import cachetools  # noqa: F401
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as error:
        _fail(
            f"the platform needs its dependencies ({error.name} is missing): "
            "pip install 'redfl[platform]'"
        )


def _settings(data: str, database_url: str | None, **extra: str | bool | None) -> Settings:
    _require_platform()
    from redfl.platform.settings import Settings, SettingsError

    try:
        return Settings.load(data, database_url=database_url, **extra)
    except SettingsError as error:
        _fail(str(error))


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _read_password() -> str:
    """The new password: the first line of stdin when it is not a terminal, else prompted
    twice."""
    if not _stdin_is_terminal():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("password (again): ") != first:
        _fail("password: the two entries differ")
    return first


def _migrated_store_session(settings: Settings) -> Session:
    from sqlalchemy.exc import SQLAlchemyError

    from redfl.platform.db import DatabaseError, make_engine, session_factory, upgrade
    from redfl.platform.settings import ensure_data_dir

    try:
        if settings.database_url is None:
            ensure_data_dir(settings.data_dir)
        engine = make_engine(settings.url)
        upgrade(engine)
    except (DatabaseError, OSError) as error:
        _fail(str(error))
    except SQLAlchemyError as error:
        _fail(f"cannot use the database {settings.url}: {type(error).__name__}: {error}")
    return session_factory(engine)()


users_app = typer.Typer(help="Manage platform users.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the platform's database.", no_args_is_help=True)


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="The new user's name.")],
    role: Annotated[str, typer.Option("--role", help="admin, researcher or viewer.")],
    data: DataOption = DEFAULT_DATA,
    database_url: UrlOption = None,
) -> None:
    """Create a user; the password is read from stdin when it is not a terminal, else
    prompted twice."""
    import re

    _require_platform()
    from redfl.platform.models import ROLES
    from redfl.platform.security import check_password_rules, hash_password
    from redfl.platform.store import Conflict, Store

    if role not in ROLES:
        _fail(f"--role: must be one of {', '.join(ROLES)}, got {role!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
        _fail(f"NAME: 1 to 64 letters, digits or '_.@-', got {name!r}")
    password = _read_password()
    try:
        check_password_rules(password)
    except ValueError as error:
        _fail(str(error))
    settings = _settings(data, database_url)
    with _migrated_store_session(settings) as session:
        try:
            Store(session).create_user(name, role, hash_password(password))
        except Conflict as error:
            _fail(str(error))
    typer.echo(f"created user {name!r} with role {role}")


@users_app.command("passwd")
def users_passwd(
    name: Annotated[str, typer.Argument(help="The user whose password to set.")],
    data: DataOption = DEFAULT_DATA,
    database_url: UrlOption = None,
) -> None:
    """Set a user's password (read like ``users create``); their refresh tokens are revoked."""
    _require_platform()
    from redfl.platform.security import check_password_rules, hash_password
    from redfl.platform.store import NotFound, Store

    password = _read_password()
    try:
        check_password_rules(password)
    except ValueError as error:
        _fail(str(error))
    with _migrated_store_session(_settings(data, database_url)) as session:
        try:
            Store(session).set_password_hash(name, hash_password(password))
        except NotFound as error:
            _fail(str(error))
    typer.echo(f"password of {name!r} changed")


@users_app.command("list")
def users_list(data: DataOption = DEFAULT_DATA, database_url: UrlOption = None) -> None:
    """List the users and their roles."""
    _require_platform()
    from redfl.platform.store import Store

    with _migrated_store_session(_settings(data, database_url)) as session:
        for user in Store(session).list_users():
            typer.echo(f"{user.name:<24} {user.role:<10} {user.created_at:%Y-%m-%d %H:%M}")


@db_app.command("upgrade")
def db_upgrade(data: DataOption = DEFAULT_DATA, database_url: UrlOption = None) -> None:
    """Apply the shipped migrations (safe to repeat)."""
    _require_platform()
    from redfl.platform.db import current_revision

    settings = _settings(data, database_url)
    with _migrated_store_session(settings) as session:
        revision = current_revision(session.get_bind().engine)
    typer.echo(f"database at revision {revision}")


def _announce(settings: Settings, host: str, port: int) -> None:
    """Say where the server, its data and its Ray are (stdout, before the JSON logs)."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    lines = [
        f"redfl platform: {base}/ (API {base}/api, schema {base}/api/openapi.json"
        + (f", docs {base}/api/docs)" if settings.docs else ")"),
        f"  data folder: {settings.data_dir.resolve()} (secrets, store, run folders)",
        "  database: "
        + ("SQLite in the data folder" if settings.database_url is None else "PostgreSQL"),
    ]
    if settings.ray_address in (None, "local"):
        lines.append(
            f"  Ray: embedded head for the data folder, starting now (log "
            f"{settings.data_dir.resolve() / 'ray-head.log'}); it outlives this server: "
            f"stop it with 'redfl head stop --data {settings.data_dir}'"
        )
    else:
        lines.append(f"  Ray: the cluster at {settings.ray_address}")
    typer.echo("\n".join(lines))


def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.", min=0, max=65535)] = 8000,
    data: DataOption = DEFAULT_DATA,
    database_url: UrlOption = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Cluster that executes runs as Ray jobs: its job server (http://HOST:8265) or "
            "GCS address (HOST:PORT, job server on port 8265). Default: a local Ray head started "
            "for the data folder, which outlives the server.",
        ),
    ] = None,
    docs: Annotated[
        bool, typer.Option("--docs", help="Serve the interactive API docs at /api/docs.")
    ] = False,
) -> None:
    """Serve the platform's API and dashboard under uvicorn (JSON logs on stderr); queued
    runs execute as Ray jobs, which keep running when the server stops.

    Several servers may share one PostgreSQL database and data folder (replicas): they
    serve the same users, runs and live streams, and one at a time executes the queue."""
    _require_platform()
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from redfl.platform.api.app import create_app
    from redfl.platform.db import DatabaseError
    from redfl.platform.logs import configure_logging
    from redfl.platform.serving import use_head_token
    from redfl.platform.settings import SettingsError

    extra = {"docs": True} if docs else {}
    settings = _settings(data, database_url, ray_address=ray_address, **extra)
    configure_logging()
    use_head_token(settings)  # before anything here uses Ray: it reads this once
    try:
        app = create_app(settings, execute=True)
    except (SettingsError, DatabaseError) as error:
        _fail(str(error))
    except SQLAlchemyError as error:
        _fail(f"--database-url: cannot use the database: {type(error).__name__}: {error}")
    _announce(settings, host, port)
    # proxy_headers off: X-Forwarded-For counts only from the operator's trusted_proxies
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, proxy_headers=False)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``users`` and ``db`` to the ``redfl`` command line (the data folder's
    Ray head is stopped with ``redfl head stop --data``: :mod:`redfl.commands.head_cmd`)."""
    app.command("serve")(serve)
    app.add_typer(users_app, name="users")
    app.add_typer(db_app, name="db")
