"""Database engines and migrations: a SQLite file by default, PostgreSQL by URL.

Migrations are the Alembic scripts shipped inside this package, run programmatically, so
``redfl db upgrade`` works from an installed package without an ``alembic.ini``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

ALLOWED_SCHEMES = ("sqlite", "postgresql+psycopg")
"""Database URL schemes the platform supports."""


class DatabaseError(ValueError):
    """A database URL is not supported, or the database cannot be reached or migrated."""


def sqlite_url(data_dir: str | Path) -> str:
    """The default store: ``<data_dir>/redfl.db``."""
    return f"sqlite:///{Path(data_dir).resolve() / 'redfl.db'}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL's safe setting: no fsync per commit
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``: ``sqlite:///PATH`` or ``postgresql+psycopg://...``.

    Raises
    ------
    DatabaseError
        If the URL's scheme is not one of :data:`ALLOWED_SCHEMES`.
    """
    scheme = url.split("://", 1)[0]
    if scheme not in ALLOWED_SCHEMES:
        raise DatabaseError(
            f"--database-url: unsupported scheme {scheme!r}; use one of {list(ALLOWED_SCHEMES)}"
        )
    if scheme == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine`` that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the shipped migrations up to ``revision`` (idempotent)."""
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Revert the shipped migrations down to ``revision``."""
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` before the first migration)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped in this package."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def ping(engine: Engine) -> bool:
    """Whether the database answers a trivial query."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:  # any driver error means "not reachable"
        return False
    return True
